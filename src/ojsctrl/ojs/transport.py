"""The HTTP transport under the OJS client: connection pool, timeouts, retries, size cap, error mapping.

It knows nothing of OJS resources: it sends one request within a :class:`Deadline` and returns the status
and body, or raises :class:`OJSError`. Only GETs are retried, on timeouts, connections lost mid-call and
429/5xx; a connection that could not be opened (refused, or a name that does not resolve) is not retried
within the call, as client-go's REST client does not: nothing listens, and the next poll will look again.
Redirects are not followed (they could carry the bearer key elsewhere). The API key is sent as a bearer
token and never appears in an error message.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError as _Urllib3HTTPError
from urllib3.exceptions import NewConnectionError as _Urllib3NewConnectionError
from urllib3.exceptions import TimeoutError as _Urllib3TimeoutError

from ojsctrl.ojs.errors import OJSError

__all__ = ["RETRY_STATUSES", "Deadline", "Response", "Transport", "redact_url", "status_error"]

_CHUNK: Final = 64 * 1024
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_MEDIA_TYPE: Final = "application/openjobspec+json"
_HEADER_VALUE_RE: Final = re.compile(r"[\x21-\x7e]+")


class _NotConnected(OJSError):
    """No connection could be opened: not worth a retry within the same call."""


class Deadline:
    """The end of one API call, shared by every request (and retry) it makes."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; zero or less once the deadline has passed."""
        return self._end - time.monotonic()


@dataclass(frozen=True, slots=True)
class Response:
    """A server's answer: status, the whole (capped) body, and the redacted URL for messages."""

    status: int
    body: bytes
    url: str


def redact_url(url: str) -> str:
    """scheme://host:port/path: no userinfo (it may hold credentials), no query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<invalid URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Transport:
    """Sends bounded HTTP requests to OJS servers over one shared, thread-safe connection pool."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        backoff: float,
        max_response_bytes: int,
        user_agent: str,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_response_bytes = max_response_bytes
        self._user_agent = user_agent
        # num_pools bounds the per-host pools kept (one per cluster); maxsize the idle connections per host:
        # as many as the stats poller's threads, so clusters served from one address (a test double, a
        # shared gateway) do not discard a connection per poll with a warning each.
        self._pool = urllib3.PoolManager(num_pools=256, maxsize=8, block=False, retries=False)

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()

    def get(
        self, base_url: str, path: str, api_key: str | None, deadline: Deadline, query: dict[str, Any]
    ) -> Response:
        """A GET that must answer 200; any other status is raised as :class:`OJSError`."""
        resp = self.request("GET", base_url, path, api_key, deadline, query=query)
        if resp.status != 200:
            raise status_error(resp)
        return resp

    def request(
        self,
        method: str,
        base_url: str,
        path: str,
        api_key: str | None,
        deadline: Deadline,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """Send ``method`` to ``base_url + path``, retrying a GET; returns whatever status the server sent."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OJSError(f"invalid OJS server URL {redact_url(base_url)}", reason="InvalidRequest")
        url = base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        safe_url = redact_url(url)
        headers = self._headers(api_key)
        if body is not None:
            headers["Content-Type"] = _MEDIA_TYPE
        # Only idempotent reads are retried: a repeated POST could act twice.
        attempts = 1 + (self.retries if method == "GET" else 0)
        error: OJSError | None = None
        for attempt in range(attempts):
            if attempt:
                pause = min(self.backoff * 2 ** (attempt - 1), 1.0) * random.uniform(0.8, 1.2)
                if deadline.remaining() <= pause:
                    break
                time.sleep(pause)
            try:
                resp = self._send(
                    method, url, safe_url=safe_url, headers=headers, body=body, deadline=deadline
                )
            except OJSError as exc:
                if exc.reason not in ("Timeout", "Unreachable"):
                    raise
                error = exc
                if isinstance(exc, _NotConnected):
                    break
                continue
            if resp.status in RETRY_STATUSES and attempt + 1 < attempts:
                error = status_error(resp)
                continue
            return resp
        if error is None:
            error = OJSError(f"deadline exceeded calling {safe_url}", reason="Timeout", url=safe_url)
        raise _scrub(error, api_key)

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {
            "Accept": f"{_MEDIA_TYPE}, application/json",
            "Accept-Encoding": "identity",
            "User-Agent": self._user_agent,
        }
        if api_key:
            # Checked here because http.client's own error for a bad header value quotes the value.
            if not _HEADER_VALUE_RE.fullmatch(api_key):
                raise OJSError(
                    "the API key contains characters not allowed in an HTTP header", reason="InvalidRequest"
                )
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def _send(
        self,
        method: str,
        url: str,
        *,
        safe_url: str,
        headers: dict[str, str],
        body: bytes | None,
        deadline: Deadline,
    ) -> Response:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise OJSError(f"deadline exceeded calling {safe_url}", reason="Timeout", url=safe_url)
        timeout = urllib3.Timeout(
            connect=min(self.connect_timeout, remaining), read=min(self.read_timeout, remaining)
        )
        try:
            resp = self._pool.request(
                method,
                url,
                headers=headers,
                body=body,
                timeout=timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
        except _Urllib3NewConnectionError as exc:
            # Checked first: urllib3 makes "connection refused" a subclass of its connect timeout.
            raise _NotConnected(
                f"cannot reach {safe_url}: {type(exc).__name__}", reason="Unreachable", url=safe_url
            ) from None
        except _Urllib3TimeoutError:
            raise OJSError(f"timed out calling {safe_url}", reason="Timeout", url=safe_url) from None
        except (_Urllib3HTTPError, OSError) as exc:
            raise OJSError(
                f"cannot reach {safe_url}: {type(exc).__name__}", reason="Unreachable", url=safe_url
            ) from None
        try:
            data = self._read_capped(resp, safe_url, deadline)
        except _Urllib3TimeoutError:
            raise OJSError(f"timed out reading {safe_url}", reason="Timeout", url=safe_url) from None
        except (_Urllib3HTTPError, OSError) as exc:
            raise OJSError(
                f"connection to {safe_url} failed mid-response: {type(exc).__name__}",
                reason="Unreachable",
                url=safe_url,
            ) from None
        finally:
            resp.release_conn()
        return Response(status=resp.status, body=data, url=safe_url)

    def _read_capped(self, resp: Any, safe_url: str, deadline: Deadline) -> bytes:
        cap = self.max_response_bytes
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            resp.close()  # do not read (or reuse the connection of) a body we will refuse
            raise OJSError(
                f"response from {safe_url} exceeds {cap} bytes", reason="ResponseTooLarge", url=safe_url
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            # read1 returns what has arrived: a server dripping bytes cannot hold us past the deadline.
            chunk = resp.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                resp.close()
                raise OJSError(
                    f"response from {safe_url} exceeds {cap} bytes", reason="ResponseTooLarge", url=safe_url
                )
            chunks.append(chunk)
            if deadline.remaining() <= 0:
                resp.close()
                raise OJSError(f"deadline exceeded reading {safe_url}", reason="Timeout", url=safe_url)
        return b"".join(chunks)


def status_error(resp: Response) -> OJSError:
    """The :class:`OJSError` for an unexpected status, with the server's machine error code if any."""
    status = resp.status
    code = ""
    try:
        err = orjson.loads(resp.body).get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            # Only the machine code: server messages are free text we do not control.
            code = re.sub(r"[^a-z0-9_]", "", err["code"].lower())[:64]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    detail = f" ({code})" if code else ""
    if status in (401, 403):
        reason, text = "Unauthorized", f"rejected the API key ({status})"
    elif status == 404:
        reason, text = "NotFound", "answered 404 Not Found"
    elif status >= 500:
        reason, text = "ServerError", f"answered {status}"
    else:
        reason, text = "HTTPError", f"answered {status}"
    return OJSError(f"{resp.url} {text}{detail}", reason=reason, status=status, url=resp.url)


def _scrub(error: OJSError, api_key: str | None) -> OJSError:
    # Belt and braces: no message we build contains the key, but a transport message might one day.
    if api_key and api_key in str(error):
        return OJSError(
            str(error).replace(api_key, "<redacted>"),
            reason=error.reason,
            status=error.status,
            url=error.url,
        )
    return error
