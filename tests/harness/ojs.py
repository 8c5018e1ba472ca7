"""OJS server doubles as the e2e suite runs them: keyed per cluster (each cluster's own API key) and
counting the stats polls per cluster."""

from __future__ import annotations

import base64
import collections
import secrets
import threading
from typing import Any

from ojsctrl.controllers.common import OJSCLUSTERS
from ojsctrl.runtime.client import SECRETS, Client
from tests.harness.kube import get, wait_until
from tests.ojsserver.server import OJSTestServer


class ClusterKeys:
    """The key resolver of an e2e OJS double (``server.key_resolver = ClusterKeys(client)``).

    The operator reaches the double at ``/<namespace>/<cluster>``; for such a prefix this answers the key
    the cluster's Secret holds, as the server the cluster deploys would be configured with it:
    ``spec.auth.apiKeySecretRef`` when set, else the generated ``<cluster>-api-key`` (key ``api-key``).
    A cluster with auth disabled, or whose Secret is not there, has no key here (the double then wants its
    own server-wide key, which the operator cannot know). Reads go through the test's driver clients
    (one per plane the double serves).
    """

    def __init__(self, *clients: Client) -> None:
        self.clients = list(clients)

    def add(self, client: Client) -> None:
        """Serve the clusters of another plane too."""
        self.clients.append(client)

    def __call__(self, prefix: str) -> str | None:
        parts = prefix.strip("/").split("/")
        if len(parts) != 2:
            return None
        ns, name = parts
        for client in list(self.clients):
            try:
                obj = get(client, OJSCLUSTERS, ns, name)
            except Exception:
                continue
            if obj is None:
                continue
            auth = (obj.get("spec") or {}).get("auth") or {}
            if auth.get("disabled"):
                return None
            ref = auth.get("apiKeySecretRef") or {}
            secret_name = ref.get("name") or f"{name}-api-key"
            key = ref.get("key") or "api-key"
            sec = get(client, SECRETS, ns, secret_name)
            value = ((sec or {}).get("data") or {}).get(key)
            return base64.b64decode(value).decode() if value else None
        return None


def cluster_api_key(client: Client, ns: str, name: str) -> str:
    """The value of a cluster's generated API key (waits for the Secret)."""
    keys = ClusterKeys(client)
    found: list[str] = []

    def present() -> bool:
        v = keys(f"/{ns}/{name}")
        if v:
            found.append(v)
        return bool(v)

    wait_until(f"Secret {name}-api-key", present, 60)
    return found[-1]


class CountingOJSServer(OJSTestServer):
    """The test OJS server, counting stats polls per cluster prefix (`/<namespace>/<cluster>`)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.polls: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def _fault_applies(self, path: str) -> bool:
        at = path.find("/ojs/")
        if at > 0 and path[at:] in ("/ojs/v1/admin/queues", "/ojs/v1/queues"):
            with self._count_lock:
                self.polls[path[:at]] += 1
        return super()._fault_applies(path)

    def poll_counts(self) -> dict[str, int]:
        with self._count_lock:
            return dict(self.polls)


def keyed_ojs_server(*clients: Client) -> CountingOJSServer:
    """A counting double that wants, under /<namespace>/<cluster>, the key the cluster's Secret holds
    (read through ``clients``), and elsewhere a key nobody has: the operator's bearer path is in play."""
    srv = CountingOJSServer(api_key=secrets.token_urlsafe(24))
    srv.key_resolver = ClusterKeys(*clients)
    return srv
