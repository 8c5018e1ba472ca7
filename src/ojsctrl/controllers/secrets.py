"""Referenced Secrets: watched metadata-only, their data read with GET only when they change.

Secret data is never cached cluster-wide: the informer holds metadata (names, resourceVersions), and
values are fetched for the few Secrets a resource references, kept in a small bounded cache keyed
by resourceVersion, and never logged.
"""

from __future__ import annotations

import base64
import threading

from cachetools import LRUCache

from ojsctrl.runtime.client import JSON, SECRETS, AlreadyExistsError, Client, NotFoundError
from ojsctrl.runtime.informer import DeletedFinalStateUnknown, FuncHandler, Informer

_REMEMBERED = "created:"


class SecretReader:
    """Reads Secret values through a metadata-only informer and a resourceVersion-keyed cache."""

    def __init__(self, client: Client, informer: Informer, max_entries: int = 4096) -> None:
        self.client = client
        self.informer = informer
        self._cache: LRUCache[str, tuple[str, dict[str, bytes]]] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()
        informer.add_event_handler(FuncHandler(delete=self._on_delete))

    def _on_delete(self, obj: JSON | DeletedFinalStateUnknown) -> None:
        meta = (obj.obj if isinstance(obj, DeletedFinalStateUnknown) else obj).get("metadata") or {}
        self.forget(meta.get("namespace", ""), meta.get("name", ""))

    def meta(self, namespace: str, name: str) -> JSON | None:
        """A Secret's metadata from the informer (None when it does not exist)."""
        return self.informer.store.get_by_name(namespace, name)

    def data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """The Secret's decoded data, or None when it does not exist."""
        key = f"{namespace}/{name}"
        meta = self.meta(namespace, name)
        rv = (meta or {}).get("metadata", {}).get("resourceVersion")
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            created_by_us = cached[0].startswith(_REMEMBERED)
            version = cached[0].removeprefix(_REMEMBERED)
            # A Secret we created a moment ago may not be in the metadata cache yet: its value is known.
            if (rv is None and created_by_us) or (rv is not None and version == rv):
                return cached[1]
        if meta is None:
            # The metadata cache is synced and authoritative: the Secret does not exist (yet). Its
            # creation is an informer event that brings the referencing resource back here.
            return None
        try:
            obj = self.client.get(SECRETS, name, namespace)
        except NotFoundError:
            with self._lock:
                self._cache.pop(key, None)
            return None
        decoded = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        with self._lock:
            self._cache[key] = (obj["metadata"]["resourceVersion"], decoded)
        return decoded

    def value(self, namespace: str, name: str, key: str) -> bytes | None:
        """One key of a Secret, or None when the Secret or the key is missing."""
        data = self.data(namespace, name)
        return None if data is None else data.get(key)

    def remember(self, obj: JSON) -> None:
        """Cache a Secret the operator just created (its value is known; saves a GET)."""
        meta = obj["metadata"]
        decoded = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        with self._lock:
            self._cache[f"{meta['namespace']}/{meta['name']}"] = (
                _REMEMBERED + meta["resourceVersion"],
                decoded,
            )

    def created_here(self, namespace: str, name: str) -> bool:
        """Whether this process created the Secret and still holds its value (the metadata cache may not
        show it yet)."""
        with self._lock:
            cached = self._cache.get(f"{namespace}/{name}")
        return cached is not None and cached[0].startswith(_REMEMBERED)

    def create(self, body: JSON, namespace: str, field_manager: str) -> JSON | None:
        """Create a generated Secret and remember its value; None when one of that name exists already
        (made a moment ago by another reconcile, or someone else's: the caller's next look tells which)."""
        try:
            created = self.client.create(SECRETS, body, namespace, field_manager=field_manager)
        except AlreadyExistsError:
            return None
        self.remember(created)
        return created

    def forget(self, namespace: str, name: str) -> None:
        """Drop a cached value (the Secret was deleted)."""
        with self._lock:
            self._cache.pop(f"{namespace}/{name}", None)
