"""The simulated job world driven by the real API server: Ready comes from kwok pods of a worker Deployment.

:func:`worker_deployment` builds a Deployment whose pods kwok (the test planes' ``pod/general`` stages) makes
Ready after a given start-up delay, through the stages' per-pod annotations
(``pod-ready.stage.kwok.x-k8s.io/delay``). A deleted pod keeps running until its ``deletionTimestamp`` (the
grace period), when kwok's pod-delete stage removes it. :class:`PodWatcher` watches the Deployment's pods with
the ``kubernetes`` client; :class:`WorldDriver` steps a :class:`~tests.ojsserver.world.World` on the wall
clock with what the watcher sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.ojsserver.world import PodState, World

# kwok's pod/general stages read their delays from these annotations (kwok: kustomize/stage/pod/general).
READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"
READY_JITTER = "pod-ready.stage.kwok.x-k8s.io/jitter-delay"
CREATE_DELAY = "pod-create.stage.kwok.x-k8s.io/delay"
CREATE_JITTER = "pod-create.stage.kwok.x-k8s.io/jitter-delay"


def api_client(kubeconfig: str | Path) -> k8s.ApiClient:
    """A ``kubernetes`` API client for the plane's kubeconfig."""
    return k8s_config.new_client_from_config(config_file=str(kubeconfig))


def kwok_annotations(startup_seconds: float) -> dict[str, str]:
    """Pod annotations for kwok's general stages: created at once, Ready after exactly ``startup_seconds``
    (the jitter bound set equal to the delay)."""
    delay = f"{int(startup_seconds * 1000)}ms"
    return {CREATE_DELAY: "0ms", CREATE_JITTER: "0ms", READY_DELAY: delay, READY_JITTER: delay}


def worker_deployment(
    name: str,
    namespace: str,
    *,
    replicas: int,
    startup_seconds: float,
    grace_seconds: int,
    image: str = "example.invalid/ojs-worker:sim",
) -> dict[str, Any]:
    """A Deployment whose kwok pods are created at once and become Ready ``startup_seconds`` later (kwok's
    jitter set equal to the delay, so the delay is fixed)."""
    labels = {"app.kubernetes.io/name": "sim-worker", "app.kubernetes.io/instance": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": kwok_annotations(startup_seconds),
                },
                "spec": {
                    "terminationGracePeriodSeconds": grace_seconds,
                    "containers": [{"name": "worker", "image": image}],
                },
            },
        },
    }


def selector_of(deployment: dict[str, Any]) -> str:
    """The label selector of a Deployment built by :func:`worker_deployment`, serialised."""
    labels: dict[str, str] = deployment["spec"]["selector"]["matchLabels"]
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def pod_state(pod: Any) -> PodState:
    """Ready and the termination deadline of a ``V1Pod``."""
    conditions = (pod.status.conditions if pod.status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    deleted: datetime | None = pod.metadata.deletion_timestamp
    return PodState(ready=ready, deadline=None if deleted is None else deleted.timestamp())


class PodWatcher:
    """The pods matching ``selector`` in ``namespace``, kept current by a list and watch on a thread."""

    def __init__(self, api: k8s.ApiClient, namespace: str, selector: str) -> None:
        self._core = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.selector = selector
        self._pods: dict[str, PodState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pods-{namespace}", daemon=True)

    def start(self) -> PodWatcher:
        """Start watching; returns once the first list is in."""
        self._thread.start()
        if not self._synced.wait(30):
            raise TimeoutError(f"no pod list from {self.namespace} within 30s")
        return self

    def stop(self) -> None:
        """Stop the watch (within its 5 s timeout)."""
        self._stop.set()
        self._thread.join(timeout=10)

    def snapshot(self) -> dict[str, PodState]:
        """The pods as last seen."""
        with self._lock:
            return dict(self._pods)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self._core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                with self._lock:
                    self._pods = {p.metadata.name: pod_state(p) for p in listed.items}
                self._synced.set()
                version = listed.metadata.resource_version
                while not self._stop.is_set():
                    w = k8s_watch.Watch()
                    for event in w.stream(
                        self._core.list_namespaced_pod,
                        self.namespace,
                        label_selector=self.selector,
                        resource_version=version,
                        timeout_seconds=5,
                    ):
                        pod = event["object"]
                        version = pod.metadata.resource_version
                        with self._lock:
                            if event["type"] == "DELETED":
                                self._pods.pop(pod.metadata.name, None)
                            else:
                                self._pods[pod.metadata.name] = pod_state(pod)
                        if self._stop.is_set():
                            w.stop()
            except ApiException as exc:
                if exc.status != 410:  # an expired resource version only needs a new list
                    time.sleep(0.5)
            except Exception:
                time.sleep(0.5)


class WorldDriver:
    """Steps ``world`` every ``tick`` seconds on the wall clock with the watched pods; ``on_step`` (if any)
    runs after each step with the time (for a baseline autoscaler, recorders)."""

    def __init__(
        self,
        world: World,
        watcher: PodWatcher,
        *,
        tick: float = 0.5,
        on_step: Callable[[float], None] | None = None,
    ) -> None:
        self.world = world
        self.watcher = watcher
        self.tick = tick
        self.on_step = on_step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="world", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> WorldDriver:
        """Start stepping."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop stepping; raises what a step raised, if anything."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.tick):
                now = time.time()
                self.world.step(now, self.watcher.snapshot())
                if self.on_step is not None:
                    self.on_step(now)
        except BaseException as exc:
            self.error = exc
