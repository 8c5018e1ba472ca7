"""The one error type of the OJS client, shared by the wire parser, the transport and the API client."""

from __future__ import annotations

__all__ = ["OJSError"]


class OJSError(Exception):
    """A failed call to an OJS server.

    ``reason`` is a short CamelCase word fit for a condition reason (``Unreachable``, ``Timeout``,
    ``Unauthorized``, ``NotFound``, ``ServerError``, ``HTTPError``, ``InvalidResponse``,
    ``ResponseTooLarge``, ``TooManyItems``, ``AdminAPIUnavailable``, ``InvalidRequest``); ``status`` is the
    HTTP status when the server answered. The message names the URL without credentials and never
    contains the API key.
    """

    def __init__(self, message: str, *, reason: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.url = url
