"""EventRecorder against a loopback endpoint that never answers: shutdown stays bounded."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ojsctrl.runtime.client import Client, ClientOptions
from ojsctrl.runtime.events import NORMAL, EventRecorder

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts connections and reads, never answers (an API server that hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    for c in held:
        c.close()
    with contextlib.suppress(OSError):
        srv.shutdown(socket.SHUT_RDWR)
    srv.close()


CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "x", "namespace": "ns", "uid": "u"},
}


def hung_recorder(endpoint: str, max_queued: int) -> EventRecorder:
    """A started recorder whose sender is stuck in its first call (an event sent to a silent endpoint)."""
    from kubernetes import client as k8s

    cfg = k8s.Configuration()
    cfg.host = endpoint
    rec = EventRecorder(Client(cfg, ClientOptions(timeout=20, max_retries=0)), "test", max_queued=max_queued)
    rec.start()
    rec.event(CONFIGMAP, NORMAL, "Test", "event 0")  # hangs in the sender
    time.sleep(0.3)
    return rec


def test_stop_does_not_block_on_a_full_queue_behind_a_hung_call(silent_endpoint: str) -> None:
    rec = hung_recorder(silent_endpoint, 3)
    for i in range(1, 10):  # the queue fills, the rest are dropped
        rec.event(CONFIGMAP, NORMAL, "Test", f"event {i}")
    started = time.monotonic()
    rec.stop(timeout=0.5)
    assert time.monotonic() - started < 2.0


def test_the_queue_holds_the_reference_not_the_object(silent_endpoint: str) -> None:
    """A backlog of events must not keep whole cached objects (old versions of them) alive."""
    from ojsctrl.runtime.events import reference

    rec = hung_recorder(silent_endpoint, 10)
    obj = {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSWorker",
        "metadata": {
            "name": "w",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": "7",
            "labels": {"a": "b"},
            "managedFields": [{"manager": "x"}],
        },
        "spec": {"image": "x" * 10_000},
        "status": {"phase": "Running"},
    }
    rec.event(obj, NORMAL, "Test", "second")
    queued = list(rec._pending.queue)
    rec.stop(timeout=0.2)
    assert [item[3] for item in queued if item] == ["second"]
    ref = queued[0][0]
    assert (
        ref
        == reference(obj)
        == {
            "apiVersion": "ojs.openjobspec.dev/v1alpha1",
            "kind": "OJSWorker",
            "metadata": {"name": "w", "namespace": "ns", "uid": "u1", "resourceVersion": "7"},
        }
    )


def test_a_full_queue_counts_its_drops(silent_endpoint: str) -> None:
    from ojsctrl.runtime.events import DROPPED

    rec = hung_recorder(silent_endpoint, 2)
    before = DROPPED._value.get()
    for i in range(1, 8):  # two fit, five are dropped
        rec.event(CONFIGMAP, NORMAL, "Test", f"event {i}")
    rec.stop(timeout=0.2)
    assert DROPPED._value.get() - before == 5
