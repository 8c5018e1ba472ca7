"""Informers against the real apiserver: order, recovery from restarts, 410 Gone, silent streams."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from ojsctrl.runtime.client import CONFIGMAPS, NotFoundError
from ojsctrl.runtime.informer import Informer
from ojsctrl.runtime.metrics import REGISTRY
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import (
    Recorder,
    cache_equals_list,
    configmap,
    driver,
    namespace,
    parallel,
    size,
    wait_until,
)


def _informer(plane: ControlPlane, ns: str, **kw: object) -> tuple[Informer, Recorder]:
    inf = Informer(driver(plane, "ojsctrl-e2e-informer"), CONFIGMAPS, namespaces=[ns], **kw)  # type: ignore[arg-type]
    rec = Recorder()
    inf.add_event_handler(rec)
    inf.start()
    assert inf.wait_for_sync(30), "informer did not sync"
    return inf, rec


def test_thousands_of_objects_in_order_and_cache_equals_list(plane: ControlPlane) -> None:
    n = size(1500, 5000)
    ns = namespace(plane, "inf-order")
    client = driver(plane)
    inf, rec = _informer(plane, ns)
    try:
        names = [f"cm-{i:05d}" for i in range(n)]
        parallel(lambda nm: client.create(CONFIGMAPS, configmap(ns, nm, v="0")), names)
        updated = names[: n // 2]
        parallel(lambda nm: client.patch(CONFIGMAPS, nm, {"data": {"v": "1"}}, ns), updated)
        deleted = names[: n // 5]
        parallel(lambda nm: client.delete(CONFIGMAPS, nm, ns), deleted)
        wait_until("cache equals a fresh list", lambda: cache_equals_list(client, inf, ns), 120, 0.5)
        for nm in random.sample(names, 200):
            seq = rec.of(f"{ns}/{nm}")
            expected = (
                ["add"]
                + (["update"] if nm in set(updated) else [])
                + (["delete"] if nm in set(deleted) else [])
            )
            assert seq == expected, (nm, seq)
        assert len([k for k in inf.store.keys() if k.startswith(f"{ns}/cm-")]) == n - len(deleted)
    finally:
        inf.stop()


def test_informer_recovers_from_apiserver_kill_and_restart(raw_plane: ControlPlane) -> None:
    ns = namespace(raw_plane, "inf-restart")
    client = driver(raw_plane)
    parallel(lambda i: client.create(CONFIGMAPS, configmap(ns, f"before-{i}")), list(range(50)))
    inf, rec = _informer(raw_plane, ns)
    try:
        raw_plane.restart_apiserver(kill=True, down_for=2.0)
        parallel(lambda i: client.create(CONFIGMAPS, configmap(ns, f"after-{i}")), list(range(50)))
        parallel(lambda i: client.delete(CONFIGMAPS, f"before-{i}", ns), list(range(25)))
        wait_until(
            "cache equals a fresh list after the restart", lambda: cache_equals_list(client, inf, ns), 90, 0.5
        )
        assert len([k for k in inf.store.keys() if "/before-" in k or "/after-" in k]) == 75
        assert rec.of(f"{ns}/before-0")[-1] in ("delete", "tombstone")
    finally:
        inf.stop()


def test_410_gone_relists_and_delivers_missed_deletes(raw_plane: ControlPlane) -> None:
    ns = namespace(raw_plane, "inf-gone")
    client = driver(raw_plane)
    parallel(lambda i: client.create(CONFIGMAPS, configmap(ns, f"cm-{i}")), list(range(20)))
    inf, rec = _informer(raw_plane, ns)
    # A handler that blocks holds the informer's thread, so the watch falls behind on purpose.
    gate = threading.Event()
    blocked = threading.Event()

    class Blocker:
        def on_add(self, obj: dict) -> None:
            if obj["metadata"]["name"] == "trigger":
                blocked.set()
                gate.wait(60)

        def on_update(self, old: dict, new: dict) -> None: ...
        def on_delete(self, obj: object) -> None: ...

    inf.add_event_handler(Blocker())
    restarts_before = (
        REGISTRY.get_sample_value(
            "ojsctrl_informer_watch_restarts_total", {"resource": inf.name, "cause": "expired"}
        )
        or 0.0
    )
    try:
        client.create(CONFIGMAPS, configmap(ns, "trigger"))
        wait_until("informer blocked in the handler", blocked.is_set, 30)
        # While the informer is not reading: delete objects, then compact away that history.
        for i in range(5):
            client.delete(CONFIGMAPS, f"cm-{i}", ns)
        client.create(CONFIGMAPS, configmap(ns, "added-in-gap"))
        raw_plane.etcd_compact()
        for handle in list(inf._handles.values()):  # drop the stream so the informer must re-watch
            handle.close()
        gate.set()
        wait_until(
            "cache equals a fresh list after the 410", lambda: cache_equals_list(client, inf, ns), 60, 0.3
        )
        after = (
            REGISTRY.get_sample_value(
                "ojsctrl_informer_watch_restarts_total", {"resource": inf.name, "cause": "expired"}
            )
            or 0.0
        )
        assert after > restarts_before, "no 410 was seen: the test did not exercise a relist"
        for i in range(5):
            assert rec.of(f"{ns}/cm-{i}")[-1] == "tombstone", rec.of(f"{ns}/cm-{i}")
        assert rec.of(f"{ns}/added-in-gap") == ["add"]
    finally:
        gate.set()
        inf.stop()


def test_silent_stream_is_detected_and_recovered(raw_plane: ControlPlane) -> None:
    ns = namespace(raw_plane, "inf-stall")
    client = driver(raw_plane)
    inf, rec = _informer(raw_plane, ns, inactivity_timeout=3.0)

    def detected() -> float:
        # A stream that goes silent ends by the inactivity timeout ("inactive"), a watch opened on the
        # frozen server gets no answer ("error"): either says the silence was noticed.
        return sum(
            REGISTRY.get_sample_value(
                "ojsctrl_informer_watch_restarts_total", {"resource": inf.name, "cause": cause}
            )
            or 0.0
            for cause in ("inactive", "error")
        )

    errors_before = detected()
    apiserver = raw_plane.processes["kube-apiserver"]
    try:
        apiserver.signal(signal.SIGSTOP)
        time.sleep(6.0)  # twice the inactivity timeout
        apiserver.signal(signal.SIGCONT)
        wait_until("apiserver answers again", lambda: client.server_version() is not None, 60)
        errors_after = detected()
        assert errors_after > errors_before, "the silent stream was not detected"
        client.create(CONFIGMAPS, configmap(ns, "after-resume"))
        wait_until("event after resume", lambda: rec.of(f"{ns}/after-resume") == ["add"], 60)
        assert cache_equals_list(client, inf, ns)
    finally:
        apiserver.signal(signal.SIGCONT)
        inf.stop()


def test_metadata_only_informer_holds_no_data(plane: ControlPlane) -> None:
    ns = namespace(plane, "inf-meta")
    client = driver(plane)
    client.create(CONFIGMAPS, configmap(ns, "secretish", password="hunter2"))
    inf = Informer(driver(plane), CONFIGMAPS, namespaces=[ns], metadata_only=True)
    inf.start()
    try:
        assert inf.wait_for_sync(30)
        obj = inf.store.get_by_name(ns, "secretish")
        assert obj is not None and "data" not in obj and obj["metadata"]["name"] == "secretish"
        client.patch(CONFIGMAPS, "secretish", {"data": {"password": "changed"}}, ns)
        rv = client.get(CONFIGMAPS, "secretish", ns)["metadata"]["resourceVersion"]
        wait_until(
            "metadata update seen",
            lambda: inf.store.get_by_name(ns, "secretish")["metadata"]["resourceVersion"] == rv,
            30,
        )
        assert "data" not in inf.store.get_by_name(ns, "secretish")
    finally:
        inf.stop()


def test_stop_ends_threads_promptly(plane: ControlPlane) -> None:
    ns = namespace(plane, "inf-stop")
    inf, _ = _informer(plane, ns)
    started = time.monotonic()
    inf.stop(timeout=5)
    assert time.monotonic() - started < 5
    assert not any(t.is_alive() for t in inf._threads)
    with pytest.raises(NotFoundError):
        driver(plane).get(CONFIGMAPS, "nope", ns)
