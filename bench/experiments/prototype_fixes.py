"""Experiment only: ojsctrl with prototype fixes monkeypatched in (src/ untouched), to measure what the
findings of the scale benchmark are worth before anyone changes src/:

    OJSCTRL_BENCH_OPERATOR_MODULE=bench.experiments.prototype_fixes OJSCTRL_BENCH_CONTENDERS=ojsctrl \\
    OJSCTRL_BENCH_RESULTS_NAME=scale-prototype OJSCTRL_BENCH_SIZES=500 python -m bench scale

OJSCTRL_FIXES selects the fixes (default A,B,C,D,E):

A: a worker whose cluster generates an API key waits for that Secret instead of applying a Deployment
   with the hash of an empty key (re-applied, and rolled out a second time, once the Secret exists).
B: the cluster reconciler's remove() of the `<name>-redis` Secret looks in the Secret metadata informer
   instead of a GET on every reconcile (resyncs included).
C: status writes remember (hash, resourceVersion) of their last write, so a reconcile running on a
   cache older than that write does not write the same status again.
D: events are posted by one background thread (as client-go's broadcaster does), not on the reconcile
   path.
E: the Secret the cluster reconciler just created is read from what it remembered, not with a GET
   before the informer has seen it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from ojsctrl.builders import cluster as cb
from ojsctrl.controllers import cluster as c
from ojsctrl.controllers import common, secrets
from ojsctrl.controllers import worker as w
from ojsctrl.runtime import events
from ojsctrl.runtime.client import SECRETS

FIXES = set(os.environ.get("OJSCTRL_FIXES", "A,B,C,D,E").split(","))


def fix_a() -> None:
    orig_run = w._Run.run

    def run(self: Any) -> Any:
        if cb.generates_api_key(self.cluster) and self.api_key() is None:
            return None  # the Secret's creation re-enqueues this worker (watch_mapped on secret metadata)
        return orig_run(self)

    w._Run.run = run  # type: ignore[method-assign]


def fix_b() -> None:
    orig_remove = c._Run.remove

    def remove(self: Any, resource: Any, name: str) -> None:
        if resource == SECRETS and self.r.secrets.meta(self.ns, name) is None:
            return
        orig_remove(self, resource, name)

    c._Run.remove = remove  # type: ignore[method-assign]


def fix_c() -> None:
    recent: dict[tuple[str, str, str], tuple[str, int]] = {}
    lock = threading.Lock()

    def apply_status(client: Any, resource: Any, obj: Any, status: Any) -> bool:
        meta = obj["metadata"]
        key = (resource.plural, meta.get("namespace"), meta["name"])
        digest = hashlib.sha256(orjson.dumps(status, option=orjson.OPT_SORT_KEYS)).hexdigest()
        try:
            rv = int(meta.get("resourceVersion") or 0)
        except ValueError:
            rv = 0
        with lock:
            prev = recent.get(key)
        if prev is not None and prev[0] == digest and rv < prev[1]:
            return False
        if common.status_unchanged(status, obj.get("status")):
            return False
        body = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": status,
        }
        try:
            out = client.apply_status(resource, body, field_manager=common.FIELD_MANAGER)
        except common.NotFoundError:
            return False
        with lock:
            recent[key] = (digest, int(out["metadata"]["resourceVersion"]))
        return True

    common.apply_status = apply_status
    c.apply_status = apply_status  # type: ignore[attr-defined]
    w.apply_status = apply_status  # type: ignore[attr-defined]


def fix_d() -> None:
    pool = ThreadPoolExecutor(1, thread_name_prefix="event-sink")
    orig_event = events.EventRecorder.event

    def event(self: Any, obj: Any, type_: str, reason: str, message: str) -> None:
        pool.submit(orig_event, self, obj, type_, reason, message)

    events.EventRecorder.event = event  # type: ignore[method-assign]


def fix_e() -> None:
    orig_data = secrets.SecretReader.data

    def data(self: Any, namespace: str, name: str) -> Any:
        if self.meta(namespace, name) is None:
            with self._lock:
                cached = self._cache.get(f"{namespace}/{name}")
            if cached is not None:
                return cached[1]
        return orig_data(self, namespace, name)

    secrets.SecretReader.data = data  # type: ignore[method-assign]


def main() -> int:
    for name, fix in {"A": fix_a, "B": fix_b, "C": fix_c, "D": fix_d, "E": fix_e}.items():
        if name in FIXES:
            fix()
    from ojsctrl.cli import main as ojsctrl_main

    return ojsctrl_main()


if __name__ == "__main__":
    sys.exit(main())
