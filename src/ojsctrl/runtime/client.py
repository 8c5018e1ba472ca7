"""A raw-JSON Kubernetes REST client on the `kubernetes` package's config, auth and transport.

The `kubernetes` package supplies kubeconfig / in-cluster loading, credential refresh (exec plugins,
rotated service-account tokens) and a configured urllib3 pool. Everything else is here: resource
paths, JSON bodies as plain dicts (its model classes are far too slow for informers), server-side
apply, streaming watches with an inactivity timeout, client-side rate limiting, retries that honour
Retry-After, and the `rest_client_*` metrics.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import urllib3
from prometheus_client import Counter, Histogram

from ojsctrl.runtime.metrics import REGISTRY
from ojsctrl.runtime.ratelimit import TokenBucket

JSON = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
PARTIAL_METADATA_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io,application/json"

REQUESTS = Counter(
    "rest_client_requests_total",
    "Number of HTTP requests, partitioned by status code, method, and host.",
    ["code", "method", "host"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "rest_client_request_duration_seconds",
    "Request latency in seconds. Broken down by verb and host.",
    ["verb", "host"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
    registry=REGISTRY,
)
RATE_LIMITER_LATENCY = Histogram(
    "rest_client_rate_limiter_duration_seconds",
    "Client side rate limiter latency in seconds. Broken down by verb and host.",
    ["verb", "host"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0),
    registry=REGISTRY,
)


# --------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answer from the API server, or a transport failure (status 0).

    Carries the HTTP status, the Status object's reason, the method and the object key or path so
    that a log line alone says what failed and why.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        method: str = "",
        target: str = "",
        body: JSON | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.target = target
        self.body = body or {}
        self.retry_after = retry_after
        super().__init__(f"{method} {target}: {status} {reason}: {message}")

    @property
    def details(self) -> JSON:
        """The ``details`` of the API server's Status body (empty when absent)."""
        return dict(self.body.get("details") or {})


class NotFoundError(ApiError):
    """404 NotFound."""


class ConflictError(ApiError):
    """409 Conflict (a stale resourceVersion, or an apply conflict without force)."""


class AlreadyExistsError(ConflictError):
    """409 AlreadyExists on create."""


class GoneError(ApiError):
    """410 Gone / Expired: the requested resourceVersion is older than the server's history."""


class InvalidError(ApiError):
    """422 Invalid: the object failed validation; `causes` names the fields."""

    @property
    def causes(self) -> list[JSON]:
        """The field causes the API server gave for the rejection."""
        return list(self.details.get("causes") or [])


class ForbiddenError(ApiError):
    """403 Forbidden (RBAC, or admission denied)."""


class TransportError(ApiError):
    """No HTTP answer at all: refused, reset, or timed out."""


class WatchInactiveError(TransportError):
    """A watch stream on which nothing, not even a bookmark, arrived for the inactivity timeout.

    Normal on servers or proxies that send no bookmarks over a quiet resource: the watch is reopened at
    once and this is not a failure."""


_ERROR_TYPES: dict[int, type[ApiError]] = {
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: InvalidError,
}


def _error_from(status: int, data: bytes, method: str, target: str, retry_after: float | None) -> ApiError:
    body: JSON = {}
    try:
        decoded = orjson.loads(data) if data else {}
        if isinstance(decoded, dict):
            body = decoded
    except orjson.JSONDecodeError:
        pass
    reason = str(body.get("reason") or f"HTTP{status}")
    message = str(body.get("message") or data[:300].decode(errors="replace"))
    cls = _ERROR_TYPES.get(status, ApiError)
    if status == 409 and reason == "AlreadyExists":
        cls = AlreadyExistsError
    return cls(status, reason, message, method=method, target=target, body=body, retry_after=retry_after)


# --------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class Resource:
    """A REST resource: group/version/plural and whether it is namespaced."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        """``group/version``, or ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path for the collection (no name) or one object."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{urllib.parse.quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{urllib.parse.quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


# The core kinds the runtime and the reconcilers use.
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
SERVICES = Resource("", "v1", "services", "Service")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
HPAS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
CRDS = Resource(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False
)


def object_key(obj: Mapping[str, Any]) -> str:
    """`namespace/name` (or `name` for cluster-scoped objects), as client-go's MetaNamespaceKeyFunc."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


# --------------------------------------------------------------------------- client
@dataclass
class ClientOptions:
    """Tunables of the client; defaults follow the manager's flags."""

    qps: float = 50.0
    burst: int = 100
    user_agent: str = "ojsctrl"
    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_retries: int = 5
    pool_size: int = 64
    extra_headers: dict[str, str] = field(default_factory=dict)


class WatchHandle:
    """Lets another thread end a blocking watch at once (shutdown closes the socket under the read)."""

    def __init__(self, on_open: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._resp: Any = None
        self._on_open = on_open
        self.closed = False

    def _attach(self, resp: Any) -> None:
        with self._lock:
            self._resp = resp
            if self.closed:
                self._shutdown(resp)
        if self._on_open is not None:
            self._on_open()

    @staticmethod
    def _shutdown(resp: Any) -> None:
        # Closing an already-broken stream is best effort.
        with contextlib.suppress(Exception):
            resp.shutdown()

    def close(self) -> None:
        """End the watch: shut its stream down under a blocking read."""
        with self._lock:
            self.closed = True
            if self._resp is not None:
                self._shutdown(self._resp)


@dataclass
class WatchEvent:
    """One decoded watch event."""

    type: str
    object: JSON


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class Client:
    """Kubernetes REST client with raw JSON bodies. Thread-safe."""

    def __init__(self, configuration: Any, options: ClientOptions | None = None) -> None:
        from kubernetes.client.rest import RESTClientObject

        self.options = options or ClientOptions()
        configuration.connection_pool_maxsize = self.options.pool_size
        # Retries are ours (they need Retry-After and the method's idempotency); urllib3 must not retry.
        configuration.retries = False
        self._config = configuration
        self._pool: urllib3.PoolManager = RESTClientObject(configuration).pool_manager
        self.host = configuration.host.rstrip("/")
        # Every request goes to the one API server: its connection pool is held directly, which skips the
        # pool manager's URL parsing and pool look-up per request. Through
        # a proxy the manager's own routing stays in charge.
        split = urllib.parse.urlsplit(self.host)
        self._direct: urllib3.HTTPConnectionPool | None = (
            None
            if isinstance(self._pool, urllib3.ProxyManager)
            else self._pool.connection_from_url(self.host)
        )
        self._prefix = split.path
        self._timeouts: dict[tuple[float, float], urllib3.Timeout] = {}
        self._metric_host = urllib.parse.urlsplit(self.host).netloc
        self._bucket = TokenBucket(self.options.qps, self.options.burst)

    def spare_in(self, share: float = 0.5) -> float:
        """Seconds until the rate limiter holds ``share`` of its burst again; 0 when it does now or there
        is no limit. Writes that can wait (polled numbers in a status) go only at 0, so they use the
        tokens the writes that cannot wait (replicas, children) leave over and never queue ahead of them."""
        return self._bucket.wait_for(self._bucket.burst * share)

    # ------------------------------------------------------------------ construction
    def derive(self, options: ClientOptions) -> Client:
        """A separate client on the same REST configuration (server, credentials, CA) with its own
        connection pool, rate limiter and options. Leader election uses one, so its short deadlines do
        not queue behind the shared client's limiter, retries or busy connections."""
        import copy

        return Client(copy.deepcopy(self._config), options)

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, context: str | None = None, options: ClientOptions | None = None
    ) -> Client:
        """Load a kubeconfig file (or the in-cluster service account when path is None and
        KUBERNETES_SERVICE_HOST is set, as client-go's clientcmd does)."""
        import os

        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config

        cfg = k8s_client.Configuration()
        if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=cfg, persist_config=False
            )
        return cls(cfg, options)

    # ------------------------------------------------------------------ core request
    def _headers(self, content_type: str | None, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": self.options.user_agent, **self.options.extra_headers}
        if content_type:
            headers["Content-Type"] = content_type
        # get_api_key_with_prefix runs the refresh hook, so rotated tokens are picked up.
        # The package keeps the token under "BearerToken" (kubeconfig and in-cluster) or, in older
        # versions, "authorization"; both are read.
        token = self._config.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        elif self._config.username or self._config.password:
            headers.update(
                urllib3.make_headers(basic_auth=f"{self._config.username}:{self._config.password}")
            )
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
        timeout: float | None = None,
        target: str | None = None,
        max_retries: int | None = None,
    ) -> Any:
        """One API call with rate limiting and bounded retries; returns the decoded JSON body.

        Retries: 429 and 5xx answers carrying Retry-After (the server asks for it, as client-go
        honours), 503/504 without Retry-After only for requests that are safe to repeat (GET, PUT with
        its resourceVersion, apply, DELETE), and connection failures for those same requests. A POST is
        not repeated after the request may have reached the server unless the server said when to come
        back: a 504 may mean the object was created after all. ``timeout`` bounds the read and the
        connect (the shorter of it and the client's connect timeout); ``max_retries`` overrides the
        client's retry budget for this call (0: one attempt, for callers with their own deadline).
        """
        retries = self.options.max_retries if max_retries is None else max_retries
        path_qs = path
        if params:
            path_qs += "?" + urllib.parse.urlencode(
                {k: v for k, v in params.items() if v is not None}, doseq=True
            )
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            content_type = content_type or "application/json"
        target = target or path
        idempotent = method in ("GET", "HEAD", "DELETE") or content_type == APPLY_PATCH or method == "PUT"
        attempt = 0
        while True:
            attempt += 1
            wait = self._bucket.reserve()
            if wait > 0:
                RATE_LIMITER_LATENCY.labels(method, self._metric_host).observe(wait)
                time.sleep(wait)
            started = time.monotonic()
            try:
                resp = self._urlopen(
                    method,
                    path_qs,
                    body=data,
                    headers=self._headers(content_type, accept),
                    timeout=self._timeout(
                        min(self.options.connect_timeout, timeout or self.options.connect_timeout),
                        timeout or self.options.timeout,
                    ),
                    preload_content=True,
                )
            except urllib3.exceptions.HTTPError as e:
                LATENCY.labels(method, self._metric_host).observe(time.monotonic() - started)
                REQUESTS.labels("<error>", method, self._metric_host).inc()
                connect_failure = isinstance(
                    e, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
                )
                if attempt <= retries and (idempotent or connect_failure):
                    time.sleep(self._backoff(attempt))
                    continue
                raise TransportError(0, "TransportError", str(e), method=method, target=target) from e
            LATENCY.labels(method, self._metric_host).observe(time.monotonic() - started)
            REQUESTS.labels(str(resp.status), method, self._metric_host).inc()
            if 200 <= resp.status < 300:
                raw = resp.data
                return orjson.loads(raw) if raw else None
            retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
            retryable = (resp.status in (503, 504) and idempotent) or (
                retry_after is not None and (resp.status == 429 or resp.status >= 500)
            )
            if retryable and attempt <= retries:
                time.sleep(min(retry_after, 10.0) if retry_after is not None else self._backoff(attempt))
                continue
            raise _error_from(resp.status, resp.data, method, target, retry_after)

    def _timeout(self, connect: float, read: float) -> urllib3.Timeout:
        """The (immutable) timeout object for these bounds, built once."""
        out = self._timeouts.get((connect, read))
        if out is None:
            out = self._timeouts.setdefault((connect, read), urllib3.Timeout(connect=connect, read=read))
        return out

    def _urlopen(
        self,
        method: str,
        path_qs: str,
        *,
        body: bytes | None,
        headers: dict[str, str],
        timeout: urllib3.Timeout,
        preload_content: bool,
    ) -> Any:
        """One HTTP exchange with the API server, no redirects and no urllib3 retries (ours are above)."""
        kw: dict[str, Any] = {
            "body": body,
            "headers": headers,
            "timeout": timeout,
            "preload_content": preload_content,
            "redirect": False,
            "retries": False,
        }
        if self._direct is None:
            return self._pool.request(method, self.host + path_qs, **kw)
        return self._direct.urlopen(
            method, self._prefix + path_qs, release_conn=preload_content, assert_same_host=False, **kw
        )

    @staticmethod
    def _backoff(attempt: int) -> float:
        return float(min(0.2 * 2 ** (attempt - 1), 5.0) * random.uniform(0.8, 1.2))

    # ------------------------------------------------------------------ verbs
    def get(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        subresource: str | None = None,
        metadata_only: bool = False,
        resource_version: str | None = None,
    ) -> JSON:
        """GET one object (raises NotFoundError). ``resource_version="0"`` accepts any version the API
        server has at hand (its watch cache, no etcd read): as fresh as an informer, and cheaper."""
        accept = PARTIAL_METADATA if metadata_only else "application/json"
        out: JSON = self.request(
            "GET",
            resource.path(namespace, name, subresource),
            params={"resourceVersion": resource_version} if resource_version is not None else None,
            accept=accept,
            target=_key(resource, namespace, name),
        )
        return out

    def list_page(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        metadata_only: bool = False,
        timeout: float | None = None,
    ) -> JSON:
        """One page of a list."""
        params = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "resourceVersion": resource_version,
            "limit": limit,
            "continue": continue_token,
        }
        accept = PARTIAL_METADATA_LIST if metadata_only else "application/json"
        out: JSON = self.request(
            "GET",
            resource.path(namespace),
            params=params,
            accept=accept,
            timeout=timeout or max(self.options.timeout, 60.0),
        )
        return out

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        page_size: int = 500,
        metadata_only: bool = False,
    ) -> tuple[list[JSON], str]:
        """List every object, following `continue` tokens; returns (items, list resourceVersion).

        A continue token that expired mid-list (410) restarts the list from the start with a fresh
        consistent read, as client-go's pager falls back to a full list.
        """
        items: list[JSON] = []
        token: str | None = None
        rv = resource_version
        while True:
            try:
                page = self.list_page(
                    resource,
                    namespace,
                    label_selector=label_selector,
                    field_selector=field_selector,
                    resource_version=rv if token is None else None,
                    limit=page_size,
                    continue_token=token,
                    metadata_only=metadata_only,
                )
            except GoneError:
                if token is None:
                    raise
                items, token, rv = [], None, None
                continue
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    def create(
        self,
        resource: Resource,
        body: JSON,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> JSON:
        """POST a new object (raises AlreadyExistsError)."""
        ns = namespace or (body.get("metadata") or {}).get("namespace")
        params = {"fieldManager": field_manager, "dryRun": "All" if dry_run else None}
        out: JSON = self.request(
            "POST",
            resource.path(ns),
            params=params,
            body=body,
            target=_key(resource, ns, (body.get("metadata") or {}).get("name", "")),
        )
        return out

    def replace(
        self, resource: Resource, body: JSON, namespace: str | None = None, *, subresource: str | None = None
    ) -> JSON:
        """PUT an object; its metadata.resourceVersion makes it an optimistic-concurrency update."""
        meta = body.get("metadata") or {}
        ns = namespace or meta.get("namespace")
        out: JSON = self.request(
            "PUT",
            resource.path(ns, meta["name"], subresource),
            body=body,
            target=_key(resource, ns, meta["name"]),
        )
        return out

    def apply(
        self,
        resource: Resource,
        body: JSON,
        *,
        field_manager: str,
        force: bool = True,
        namespace: str | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> JSON:
        """Server-side apply of a body holding exactly the fields this manager owns."""
        meta = body.get("metadata") or {}
        ns = namespace or meta.get("namespace")
        params = {
            "fieldManager": field_manager,
            "force": "true" if force else None,
            "dryRun": "All" if dry_run else None,
        }
        out: JSON = self.request(
            "PATCH",
            resource.path(ns, meta["name"], subresource),
            params=params,
            body=orjson.dumps(body),
            content_type=APPLY_PATCH,
            target=_key(resource, ns, meta["name"]),
        )
        return out

    def apply_status(self, resource: Resource, body: JSON, *, field_manager: str, force: bool = True) -> JSON:
        """Server-side apply to the status subresource."""
        return self.apply(resource, body, field_manager=field_manager, force=force, subresource="status")

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: str = MERGE_PATCH,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> JSON:
        """A merge (default), JSON or strategic-merge patch."""
        out: JSON = self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            params={"fieldManager": field_manager},
            body=patch,
            content_type=patch_type,
            target=_key(resource, namespace, name),
        )
        return out

    def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation_policy: str | None = "Background",
    ) -> JSON | None:
        """DELETE with optional preconditions (uid / resourceVersion), so only the object we saw goes."""
        options: JSON = {"apiVersion": "v1", "kind": "DeleteOptions"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            options["preconditions"] = preconditions
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        out: JSON | None = self.request(
            "DELETE", resource.path(namespace, name), body=options, target=_key(resource, namespace, name)
        )
        return out

    # ------------------------------------------------------------------ watch
    def watch(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        inactivity_timeout: float = 70.0,
        allow_bookmarks: bool = True,
        metadata_only: bool = False,
        handle: WatchHandle | None = None,
    ) -> Iterator[WatchEvent]:
        """Stream watch events until the server ends the watch or the stream goes silent.

        The socket read timeout is the inactivity timeout: a stream on which nothing, not even a
        bookmark, arrives for that long raises WatchInactiveError (a TransportError), so a frozen
        server is noticed.
        The server-side timeout is randomised between 5 and 10 minutes by default to spread
        reconnections, as client-go's reflector does.
        """
        if timeout_seconds is None:
            timeout_seconds = random.randint(300, 600)
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true" if allow_bookmarks else None,
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "timeoutSeconds": timeout_seconds,
        }
        resp = self._open_watch(resource, namespace, params, metadata_only, inactivity_timeout)
        try:
            if resp.status != 200:
                raise _error_from(
                    resp.status,
                    resp.read(),
                    "WATCH",
                    str(resource),
                    _parse_retry_after(resp.headers.get("Retry-After")),
                )
            if handle is not None:
                handle._attach(resp)
            yield from _decode_watch_stream(resp, handle)
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            if handle is not None and handle.closed:
                return
            raise _watch_stream_error(e, resource, inactivity_timeout) from e
        finally:
            # Close before releasing: a stream abandoned mid-way still has unread chunks on its
            # socket, and a pooled connection with leftovers would corrupt the next request.
            resp.close()
            resp.release_conn()

    def _open_watch(
        self,
        resource: Resource,
        namespace: str | None,
        params: Mapping[str, Any],
        metadata_only: bool,
        inactivity_timeout: float,
    ) -> Any:
        """Send the watch request (after the rate limiter) and return the unread streaming response."""
        path_qs = (
            resource.path(namespace)
            + "?"
            + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        )
        wait = self._bucket.reserve()
        if wait > 0:
            time.sleep(wait)
        accept = PARTIAL_METADATA if metadata_only else "application/json"
        try:
            resp = self._urlopen(
                "GET",
                path_qs,
                body=None,
                headers=self._headers(None, accept),
                timeout=self._timeout(self.options.connect_timeout, inactivity_timeout),
                preload_content=False,
            )
        except urllib3.exceptions.HTTPError as e:
            REQUESTS.labels("<error>", "WATCH", self._metric_host).inc()
            raise TransportError(0, "TransportError", str(e), method="WATCH", target=str(resource)) from e
        REQUESTS.labels(str(resp.status), "WATCH", self._metric_host).inc()
        return resp

    # ------------------------------------------------------------------ discovery
    def served(self, group: str, version: str, plural: str) -> bool:
        """Is this resource served right now? (For optional kinds such as ServiceMonitor.)"""
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            doc = self.request("GET", path, timeout=10)
        except NotFoundError:
            return False
        return any(r.get("name") == plural for r in (doc or {}).get("resources", []))

    def server_version(self) -> JSON:
        """The API server's ``/version`` document."""
        out: JSON = self.request("GET", "/version", timeout=10)
        return out


def _decode_watch_stream(resp: Any, handle: WatchHandle | None) -> Iterator[WatchEvent]:
    """The events of a watch response, one JSON object per line, until it ends or ``handle`` closes."""
    buf = b""
    chunks = resp.read_chunked(decode_content=True) if resp.chunked else resp.stream(65536)
    for chunk in chunks:
        if handle is not None and handle.closed:
            return
        buf += chunk
        if b"\n" not in chunk:
            continue
        # One split per chunk: slicing the rest off after each line copied it once per line.
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield _watch_event(line)
    if buf.strip():
        yield _watch_event(buf)


def _watch_event(line: bytes) -> WatchEvent:
    ev = orjson.loads(line)
    return WatchEvent(ev.get("type", ""), ev.get("object") or {})


def _watch_stream_error(error: Exception, resource: Resource, inactivity_timeout: float) -> TransportError:
    """A broken watch stream as an ApiError: silence past the read timeout is WatchInactiveError."""
    if isinstance(error, urllib3.exceptions.ReadTimeoutError | TimeoutError):
        return WatchInactiveError(
            0,
            "WatchInactive",
            f"no event for {inactivity_timeout:g}s",
            method="WATCH",
            target=str(resource),
        )
    return TransportError(
        0, "TransportError", f"watch stream broken: {error}", method="WATCH", target=str(resource)
    )


def _key(resource: Resource, namespace: str | None, name: str) -> str:
    return f"{resource} {namespace}/{name}" if namespace else f"{resource} {name}"
