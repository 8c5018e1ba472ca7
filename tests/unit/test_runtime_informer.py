"""Unit tests for ojsctrl.runtime.informer: the indexed store, index functions and the informer's
list/event delivery logic (driven directly, without a server or reflector threads)."""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Iterable
from typing import Any, cast

import pytest

from ojsctrl.runtime.client import Client, Resource
from ojsctrl.runtime.informer import (
    CONTROLLER_INDEX,
    DEFAULT_INDEXERS,
    NAMESPACE_INDEX,
    OWNER_INDEX,
    DeletedFinalStateUnknown,
    FuncHandler,
    Informer,
    InformerFactory,
    Store,
    index_by_controller_uid,
    index_by_namespace,
    index_by_owner_uid,
    intern_strings,
    strip_managed_fields,
)

pytestmark = pytest.mark.timeout(30)

JSON = dict[str, Any]
PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)


def obj(
    name: str,
    namespace: str | None = "default",
    *,
    rv: str = "1",
    owners: Iterable[tuple[str, bool]] = (),
    labels: dict[str, str] | None = None,
    managed_fields: bool = False,
) -> JSON:
    meta: JSON = {"name": name, "resourceVersion": rv}
    if namespace is not None:
        meta["namespace"] = namespace
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": f"owner-{uid}", "uid": uid, "controller": ctrl}
        for uid, ctrl in owners
    ]
    if refs:
        meta["ownerReferences"] = refs
    if labels is not None:
        meta["labels"] = labels
    if managed_fields:
        meta["managedFields"] = [{"manager": "kubectl", "operation": "Apply"}]
    return {"metadata": meta}


def names(objs: Iterable[JSON]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


def label_indexer(o: JSON) -> Iterable[str]:
    return tuple((o["metadata"].get("labels") or {}).values())


# --------------------------------------------------------------------------- Store basics
class TestStoreBasics:
    def test_upsert_get_returns_previous(self) -> None:
        s = Store()
        a1 = obj("a", rv="1")
        a2 = obj("a", rv="2")
        assert s.upsert("default/a", a1) is None
        assert s.upsert("default/a", a2) is a1
        assert s.get("default/a") is a2
        assert s.get_by_name("default", "a") is a2
        assert len(s) == 1

    def test_get_missing(self) -> None:
        s = Store()
        assert s.get("nope") is None
        assert s.get_by_name(None, "nope") is None

    def test_cluster_scoped_get_by_name(self) -> None:
        s = Store()
        n = obj("node-1", None)
        s.upsert("node-1", n)
        assert s.get_by_name(None, "node-1") is n
        assert s.get_by_name("", "node-1") is n

    def test_delete_returns_removed_and_missing_is_none(self) -> None:
        s = Store()
        a = obj("a")
        s.upsert("default/a", a)
        assert s.delete("default/a") is a
        assert s.delete("default/a") is None
        assert s.get("default/a") is None
        assert len(s) == 0

    def test_objects_and_keys_are_snapshots(self) -> None:
        s = Store()
        s.upsert("default/a", obj("a"))
        s.upsert("default/b", obj("b"))
        keys = s.keys()
        objects = s.objects()
        assert sorted(keys) == ["default/a", "default/b"]
        assert names(objects) == {"a", "b"}
        s.delete("default/a")
        # The earlier snapshots are unaffected by later writes.
        assert sorted(keys) == ["default/a", "default/b"]
        assert len(objects) == 2
        assert s.keys() == ["default/b"]

    def test_by_index_unknown_index_raises(self) -> None:
        s = Store()
        with pytest.raises(KeyError, match="nope"):
            s.by_index("nope", "x")


# --------------------------------------------------------------------------- Store indexes
class TestStoreIndexes:
    def test_default_indexers(self) -> None:
        s = Store(DEFAULT_INDEXERS)
        s.upsert("a/x", obj("x", "a", owners=[("u1", True), ("u2", False)]))
        s.upsert("a/y", obj("y", "a", owners=[("u2", False)]))
        s.upsert("b/z", obj("z", "b"))
        assert names(s.by_index(NAMESPACE_INDEX, "a")) == {"x", "y"}
        assert names(s.by_index(NAMESPACE_INDEX, "b")) == {"z"}
        assert s.by_index(NAMESPACE_INDEX, "c") == []
        assert names(s.by_index(OWNER_INDEX, "u1")) == {"x"}
        assert names(s.by_index(OWNER_INDEX, "u2")) == {"x", "y"}
        assert names(s.by_index(CONTROLLER_INDEX, "u1")) == {"x"}
        assert s.by_index(CONTROLLER_INDEX, "u2") == []
        assert sorted(s.index_values(NAMESPACE_INDEX)) == ["a", "b"]
        assert sorted(s.index_values(OWNER_INDEX)) == ["u1", "u2"]
        assert s.index_values(CONTROLLER_INDEX) == ["u1"]

    def test_indexer_added_later_indexes_existing_objects(self) -> None:
        s = Store(DEFAULT_INDEXERS)
        s.upsert("a/x", obj("x", "a", labels={"app": "web"}))
        s.upsert("a/y", obj("y", "a", labels={"app": "db"}))
        s.upsert("a/z", obj("z", "a"))
        s.add_indexers({"app": label_indexer})
        assert names(s.by_index("app", "web")) == {"x"}
        assert names(s.by_index("app", "db")) == {"y"}
        assert sorted(s.index_values("app")) == ["db", "web"]
        # And it keeps up with later writes.
        s.upsert("a/w", obj("w", "a", labels={"app": "web"}))
        assert names(s.by_index("app", "web")) == {"x", "w"}

    def test_same_indexer_again_is_a_no_op(self) -> None:
        s = Store({"app": label_indexer})
        s.upsert("a/x", obj("x", "a", labels={"app": "web"}))
        s.add_indexers({"app": label_indexer})
        assert names(s.by_index("app", "web")) == {"x"}

    def test_same_name_other_function_raises(self) -> None:
        s = Store(DEFAULT_INDEXERS)
        with pytest.raises(ValueError, match="namespace"):
            s.add_indexers({NAMESPACE_INDEX: label_indexer})
        # The original indexer is still in charge.
        s.upsert("a/x", obj("x", "a"))
        assert names(s.by_index(NAMESPACE_INDEX, "a")) == {"x"}

    def test_changed_value_moves_key_and_drops_empty_bucket(self) -> None:
        s = Store({**DEFAULT_INDEXERS, "app": label_indexer})
        s.upsert("a/x", obj("x", "a", labels={"app": "web"}, owners=[("u1", True)]))
        s.upsert("a/y", obj("y", "a", labels={"app": "web"}))
        s.upsert("a/x", obj("x", "a", rv="2", labels={"app": "db"}, owners=[("u9", True)]))
        assert names(s.by_index("app", "web")) == {"y"}
        assert names(s.by_index("app", "db")) == {"x"}
        assert sorted(s.index_values("app")) == ["db", "web"]
        assert s.by_index(OWNER_INDEX, "u1") == []
        assert s.index_values(OWNER_INDEX) == ["u9"]
        assert s.index_values(CONTROLLER_INDEX) == ["u9"]
        s.upsert("a/y", obj("y", "a", rv="2", labels={"app": "db"}))
        assert s.index_values("app") == ["db"]
        assert names(s.by_index("app", "db")) == {"x", "y"}

    def test_value_removed_entirely(self) -> None:
        s = Store({"app": label_indexer})
        s.upsert("a/x", obj("x", "a", labels={"app": "web"}))
        s.upsert("a/x", obj("x", "a", rv="2"))
        assert s.index_values("app") == []
        assert s.by_index("app", "web") == []

    def test_delete_removes_from_every_index(self) -> None:
        s = Store({**DEFAULT_INDEXERS, "app": label_indexer})
        s.upsert("a/x", obj("x", "a", labels={"app": "web"}, owners=[("u1", True)]))
        s.upsert("b/y", obj("y", "b", labels={"app": "web"}))
        s.delete("a/x")
        assert s.index_values(NAMESPACE_INDEX) == ["b"]
        assert s.index_values(OWNER_INDEX) == []
        assert s.index_values(CONTROLLER_INDEX) == []
        assert names(s.by_index("app", "web")) == {"y"}
        s.delete("b/y")
        for index in (NAMESPACE_INDEX, OWNER_INDEX, CONTROLLER_INDEX, "app"):
            assert s.index_values(index) == []

    def test_multi_valued_index_with_duplicates(self) -> None:
        s = Store({"dup": lambda o: ("v", "v", "w")})
        s.upsert("a/x", obj("x", "a"))
        assert names(s.by_index("dup", "v")) == {"x"}
        s.delete("a/x")
        assert s.index_values("dup") == []

    def test_concurrent_upserts_and_deletes_stay_consistent(self) -> None:
        s = Store({**DEFAULT_INDEXERS, "app": label_indexer})
        nss = ["n0", "n1", "n2"]
        apps = ["web", "db", "cache"]
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            try:
                start.wait()
                for i in range(1500):
                    ns = rng.choice(nss)
                    key = f"{ns}/o{rng.randrange(20)}"
                    if rng.random() < 0.3:
                        s.delete(key)
                    else:
                        o = obj(
                            key.split("/")[1],
                            ns,
                            rv=str(i),
                            labels={"app": rng.choice(apps)},
                            owners=[(f"u{rng.randrange(4)}", rng.random() < 0.5)],
                        )
                        s.upsert(key, o)
                    if i % 100 == 0:
                        # Readers must never see a key that is indexed but absent.
                        s.by_index("app", rng.choice(apps))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not errors
        assert not any(t.is_alive() for t in threads)

        keys = set(s.keys())
        items = {k: s.get(k) for k in keys}
        for index, fn in [*DEFAULT_INDEXERS.items(), ("app", label_indexer)]:
            expected: dict[str, set[str]] = {}
            for k, o in items.items():
                assert o is not None
                for v in fn(o):
                    expected.setdefault(v, set()).add(k)
            assert set(s.index_values(index)) == set(expected), index
            for v, ks in expected.items():
                got = {f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in s.by_index(index, v)}
                assert got == ks, (index, v)


# --------------------------------------------------------------------------- pure helpers
class TestHelpers:
    def test_strip_managed_fields(self) -> None:
        o = obj("a", managed_fields=True, labels={"x": "y"})
        out = strip_managed_fields(o)
        assert out is o
        assert "managedFields" not in o["metadata"]
        assert o["metadata"]["labels"] == {"x": "y"}

    @pytest.mark.parametrize("o", [{}, {"metadata": None}, {"metadata": {}}, {"metadata": {"name": "a"}}])
    def test_strip_managed_fields_tolerates_missing(self, o: JSON) -> None:
        before = copy.deepcopy(o)
        assert strip_managed_fields(o) == before

    @pytest.mark.parametrize(
        ("o", "expected"),
        [
            (obj("a", "ns1"), ("ns1",)),
            (obj("a", None), ()),
            ({"metadata": {"namespace": ""}}, ()),
            ({}, ()),
            ({"metadata": None}, ()),
        ],
    )
    def test_index_by_namespace(self, o: JSON, expected: tuple[str, ...]) -> None:
        assert tuple(index_by_namespace(o)) == expected

    @pytest.mark.parametrize(
        ("o", "expected"),
        [
            (obj("a", owners=[("u1", True), ("u2", False)]), ("u1", "u2")),
            (obj("a"), ()),
            ({"metadata": {"ownerReferences": [{"kind": "X", "name": "n"}]}}, ()),
            ({"metadata": {"ownerReferences": None}}, ()),
            ({}, ()),
        ],
    )
    def test_index_by_owner_uid(self, o: JSON, expected: tuple[str, ...]) -> None:
        assert tuple(index_by_owner_uid(o)) == expected

    @pytest.mark.parametrize(
        ("o", "expected"),
        [
            (obj("a", owners=[("u1", False), ("u2", True)]), ("u2",)),
            (obj("a", owners=[("u1", False)]), ()),
            ({"metadata": {"ownerReferences": [{"controller": True}]}}, ()),
            ({"metadata": {"ownerReferences": [{"controller": True, "uid": ""}]}}, ()),
            ({}, ()),
        ],
    )
    def test_index_by_controller_uid(self, o: JSON, expected: tuple[str, ...]) -> None:
        assert tuple(index_by_controller_uid(o)) == expected

    def test_deleted_final_state_unknown(self) -> None:
        last = obj("a")
        tomb = DeletedFinalStateUnknown("default/a", last)
        assert tomb.key == "default/a"
        assert tomb.obj is last
        assert tomb == DeletedFinalStateUnknown("default/a", obj("a"))
        with pytest.raises(AttributeError):
            tomb.key = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------- Informer
class Recorder:
    """An event handler that records what it is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, Any]] = []

    def on_add(self, o: JSON) -> None:
        self.events.append(("add", o, None))

    def on_update(self, old: JSON, new: JSON) -> None:
        self.events.append(("update", old, new))

    def on_delete(self, o: JSON | DeletedFinalStateUnknown) -> None:
        self.events.append(("delete", o, None))

    def kinds(self) -> list[tuple[str, str]]:
        out = []
        for kind, a, b in self.events:
            target = b if kind == "update" else a
            if isinstance(target, DeletedFinalStateUnknown):
                out.append((kind, "tomb:" + target.key))
            else:
                m = target["metadata"]
                out.append((kind, f"{m.get('namespace', '')}/{m['name']}"))
        return out

    def clear(self) -> None:
        self.events.clear()


def informer(resource: Resource = PODS, **kwargs: Any) -> Informer:
    # The client is only used by the reflector threads, which these tests never start.
    return Informer(cast(Client, None), resource, **kwargs)


class TestInformerReplace:
    def test_initial_replace_delivers_adds_and_restores_kind(self) -> None:
        inf = informer()
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._replace(None, [obj("a", "n1"), obj("b", "n2")])
        assert sorted(rec.kinds()) == [("add", "n1/a"), ("add", "n2/b")]
        for _, o, _ in rec.events:
            assert o["apiVersion"] == "v1"
            assert o["kind"] == "Pod"
        assert sorted(inf.store.keys()) == ["n1/a", "n2/b"]

    def test_changed_rv_is_update_unchanged_is_silent(self) -> None:
        inf = informer()
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._replace(None, [obj("a", "n1", rv="1"), obj("b", "n1", rv="5")])
        rec.clear()
        inf._replace(None, [obj("a", "n1", rv="2"), obj("b", "n1", rv="5")])
        assert rec.kinds() == [("update", "n1/a")]
        _, old, new = rec.events[0]
        assert old["metadata"]["resourceVersion"] == "1"
        assert new["metadata"]["resourceVersion"] == "2"
        assert inf.store.get("n1/a") is new

    def test_missing_keys_become_tombstones_with_last_state(self) -> None:
        inf = informer()
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._replace(None, [obj("a", "n1", rv="3"), obj("b", "n1")])
        last = inf.store.get("n1/a")
        rec.clear()
        inf._replace(None, [obj("b", "n1")])
        assert rec.kinds() == [("delete", "tomb:n1/a")]
        tomb = rec.events[0][1]
        assert isinstance(tomb, DeletedFinalStateUnknown)
        assert tomb.obj is last
        assert tomb.obj["metadata"]["resourceVersion"] == "3"
        assert inf.store.keys() == ["n1/b"]
        assert inf.store.index_values(NAMESPACE_INDEX) == ["n1"]

    def test_relist_of_one_namespace_leaves_the_others_alone(self) -> None:
        inf = informer(namespaces=["b", "a"])
        assert inf._scopes == ["a", "b"]
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._replace("a", [obj("x", "a"), obj("y", "a")])
        inf._replace("b", [obj("x", "b")])
        # A namespace that is a prefix of another must not be confused with it either.
        inf._apply_event("ADDED", obj("q", "ab"))
        rec.clear()
        inf._replace("a", [obj("y", "a")])
        assert rec.kinds() == [("delete", "tomb:a/x")]
        assert sorted(inf.store.keys()) == ["a/y", "ab/q", "b/x"]
        rec.clear()
        inf._replace("b", [])
        assert rec.kinds() == [("delete", "tomb:b/x")]
        assert sorted(inf.store.keys()) == ["a/y", "ab/q"]

    def test_cluster_scoped_resource_ignores_namespaces(self) -> None:
        inf = informer(NODES, namespaces=["a"])
        assert inf._scopes == [None]
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._replace(None, [obj("n1", None), obj("n2", None)])
        rec.clear()
        inf._replace(None, [obj("n2", None)])
        assert rec.kinds() == [("delete", "tomb:n1")]

    def test_managed_fields_are_stripped(self) -> None:
        inf = informer()
        inf._replace(None, [obj("a", "n1", managed_fields=True)])
        inf._apply_event("ADDED", obj("b", "n1", managed_fields=True))
        inf._apply_event("MODIFIED", obj("a", "n1", rv="2", managed_fields=True))
        for o in inf.store.objects():
            assert "managedFields" not in o["metadata"]
        assert len(inf.store) == 2

    def test_transform_applies_to_stored_objects(self) -> None:
        def drop_labels(o: JSON) -> JSON:
            o["metadata"].pop("labels", None)
            return o

        inf = informer(transform=drop_labels)
        inf._replace(None, [obj("a", "n1", labels={"x": "y"})])
        inf._apply_event("ADDED", obj("b", "n1", labels={"x": "y"}))
        for o in inf.store.objects():
            assert "labels" not in o["metadata"]


class TestInformerEvents:
    def test_added_modified_deleted(self) -> None:
        inf = informer()
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._apply_event("ADDED", obj("a", "n1", rv="1"))
        inf._apply_event("MODIFIED", obj("a", "n1", rv="2"))
        inf._apply_event("DELETED", obj("a", "n1", rv="3"))
        assert rec.kinds() == [("add", "n1/a"), ("update", "n1/a"), ("delete", "n1/a")]
        _, old, new = rec.events[1]
        assert (old["metadata"]["resourceVersion"], new["metadata"]["resourceVersion"]) == ("1", "2")
        # A watch delete carries the object's final state, not a tombstone.
        assert rec.events[2][1]["metadata"]["resourceVersion"] == "3"
        assert len(inf.store) == 0
        assert inf.store.index_values(NAMESPACE_INDEX) == []

    def test_modified_for_unknown_object_is_an_add(self) -> None:
        inf = informer()
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._apply_event("MODIFIED", obj("a", "n1"))
        assert rec.kinds() == [("add", "n1/a")]

    def test_late_handler_gets_existing_objects_replayed(self) -> None:
        inf = informer()
        early = Recorder()
        inf.add_event_handler(early)
        inf._replace(None, [obj("a", "n1"), obj("b", "n1")])
        late = Recorder()
        inf.add_event_handler(late)
        assert sorted(late.kinds()) == [("add", "n1/a"), ("add", "n1/b")]
        # The early handler is not replayed to again.
        assert len(early.events) == 2
        inf._apply_event("ADDED", obj("c", "n1"))
        assert late.kinds()[-1] == ("add", "n1/c")
        assert early.kinds()[-1] == ("add", "n1/c")

    def test_raising_handler_does_not_starve_the_others(self) -> None:
        inf = informer()
        calls: list[str] = []

        def boom(*_: Any) -> None:
            calls.append("boom")
            raise RuntimeError("handler bug")

        inf.add_event_handler(FuncHandler(add=boom, update=boom, delete=boom))
        rec = Recorder()
        inf.add_event_handler(rec)
        inf._replace(None, [obj("a", "n1")])
        inf._apply_event("MODIFIED", obj("a", "n1", rv="2"))
        inf._apply_event("DELETED", obj("a", "n1", rv="3"))
        inf._replace(None, [obj("b", "n1")])
        inf._replace(None, [])
        assert rec.kinds() == [
            ("add", "n1/a"),
            ("update", "n1/a"),
            ("delete", "n1/a"),
            ("add", "n1/b"),
            ("delete", "tomb:n1/b"),
        ]
        assert calls == ["boom"] * 5
        assert len(inf.store) == 0

    def test_resync_delivers_update_with_same_object(self) -> None:
        inf = informer()
        inf._replace(None, [obj("a", "n1"), obj("b", "n2")])
        rec = Recorder()
        inf.add_event_handler(rec)
        rec.clear()
        inf.resync()
        assert sorted(rec.kinds()) == [("update", "n1/a"), ("update", "n2/b")]
        for kind, old, new in rec.events:
            assert kind == "update"
            assert old is new

    def test_funchandler_with_missing_functions_is_a_no_op(self) -> None:
        inf = informer()
        inf.add_event_handler(FuncHandler())
        inf._apply_event("ADDED", obj("a", "n1"))
        inf._apply_event("MODIFIED", obj("a", "n1", rv="2"))
        inf._apply_event("DELETED", obj("a", "n1"))
        assert len(inf.store) == 0

    def test_not_started_informer_is_alive_and_unsynced(self) -> None:
        inf = informer(namespaces=["a", "b"])
        assert inf.alive()
        assert not inf.has_synced()
        assert inf.name == "pods"
        assert informer(label_selector="app=x").name == "pods[app=x]"


class TestResyncOnlyWhenAsked:
    """The factory resyncs only the informers asked to (a controller's primary kind); caches of
    children deliver changes by watch alone."""

    def test_factory_resyncs_only_informers_asked_to(self) -> None:
        factory = InformerFactory(cast(Client, None), resync_period=0.2)
        child = factory.informer(PODS, label_selector="managed")
        primary = factory.informer(NODES, resync=True)
        assert child.resync_period == 0
        assert primary.resync_period == 0.2
        # The same cache asked again without resync keeps resyncing.
        assert factory.informer(NODES) is primary
        assert primary.resync_period == 0.2

    def test_only_the_primary_delivers_resyncs(self) -> None:
        factory = InformerFactory(cast(Client, None), resync_period=0.1)
        child = factory.informer(PODS, label_selector="managed")
        primary = factory.informer(NODES, resync=True)
        recorders = {}
        for inf in (child, primary):
            inf._replace(None, [obj("a", "n1") if inf is child else obj("a", None)])
            recorders[inf.name] = rec = Recorder()
            inf.add_event_handler(rec)
            rec.clear()
            # Started without reflector threads (there is no server here): only the resync loop runs.
            inf._started = True
            inf._synced[None] = True
            if inf.resync_period > 0:
                inf._start_resync()
        try:
            deadline = time.monotonic() + 5
            while not recorders[primary.name].events and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # three more periods: the child still hears nothing
            assert recorders[primary.name].kinds()[0] == ("update", "/a")
            assert recorders[child.name].events == []
        finally:
            child.stop()
            primary.stop()

    def test_a_started_shared_informer_asked_to_resync_starts_resyncing(self) -> None:
        factory = InformerFactory(cast(Client, None), resync_period=0.1)
        inf = factory.informer(PODS)
        inf._replace(None, [obj("a", "n1")])
        rec = Recorder()
        inf.add_event_handler(rec)
        rec.clear()
        inf._started = True  # as if started and synced, without reflector threads
        inf._synced[None] = True
        try:
            time.sleep(0.3)
            assert rec.events == []
            assert factory.informer(PODS, resync=True) is inf
            deadline = time.monotonic() + 5
            while not rec.events and time.monotonic() < deadline:
                time.sleep(0.02)
            assert rec.kinds()[0] == ("update", "n1/a")
        finally:
            inf.stop()


def test_cached_objects_share_their_short_string_values() -> None:
    # Two children decoded apart hold equal label values, kinds and condition reasons: after the informer's
    # preparation they hold one copy of each, and every value is unchanged.
    import orjson

    def decoded(name: str) -> Any:
        raw = {
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "ojsctrl"},
                "resourceVersion": "4711",
                "creationTimestamp": "2026-12-06T00:00:00Z",
            },
            "status": {
                "conditions": [
                    {
                        "type": "Available",
                        "reason": "MinimumReplicasAvailable",
                        "lastTransitionTime": "2026-12-06T00:00:01Z",
                    }
                ]
            },
            "spec": {"note": "x" * 65, "ports": [{"name": "http", "protocol": "TCP"}]},
        }
        return orjson.loads(orjson.dumps(raw))

    a, b = decoded("a-worker"), decoded("b-worker")
    plain = copy.deepcopy(a)
    intern_strings(a)
    intern_strings(b)
    assert a == plain
    assert a["kind"] is b["kind"]
    assert (
        a["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        is b["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    )
    assert a["status"]["conditions"][0]["reason"] is b["status"]["conditions"][0]["reason"]
    assert a["spec"]["ports"][0]["protocol"] is b["spec"]["ports"][0]["protocol"]
    # Longer strings (messages, one object's own data) are left alone, and so are the values every write
    # renews (resourceVersion, uid, timestamps): they would only grow the table of shared strings.
    assert a["spec"]["note"] is not b["spec"]["note"]
    assert a["metadata"]["resourceVersion"] is not b["metadata"]["resourceVersion"]
    assert a["metadata"]["creationTimestamp"] is not b["metadata"]["creationTimestamp"]
    cond_a, cond_b = a["status"]["conditions"][0], b["status"]["conditions"][0]
    assert cond_a["lastTransitionTime"] is not cond_b["lastTransitionTime"]


class TestUpdatesReuseWhatDidNotChange:
    """A MODIFIED event reuses the parts of the cached version it did not change (share_unchanged)."""

    DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")

    @staticmethod
    def deployment(generation: int, *, ready: int, uid: str = "u1", image: str = "ojs:1") -> JSON:
        import orjson

        raw = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "w-worker",
                "namespace": "ns",
                "uid": uid,
                "generation": generation,
                "resourceVersion": str(100 + generation * 10 + ready),
                "labels": {"app.kubernetes.io/managed-by": "ojsctrl"},
                "ownerReferences": [{"kind": "OJSWorker", "name": "w", "uid": "o1", "controller": True}],
            },
            "spec": {
                "replicas": 2,
                "template": {"spec": {"containers": [{"name": "worker", "image": image}]}},
            },
            "status": {"readyReplicas": ready},
        }
        # Decoded afresh, as every watch event is: no part shared with another version by accident.
        return cast(JSON, orjson.loads(orjson.dumps(raw)))

    def test_a_status_step_keeps_the_cached_spec_and_its_compact_template(self) -> None:
        from ojsctrl.runtime.apply import TEMPLATE_DIGEST, compact_template

        hashed: list[JSON] = []

        def transform(o: JSON) -> JSON:
            template = o["spec"]["template"]
            if TEMPLATE_DIGEST not in template:
                hashed.append(template)
            return compact_template(o)

        inf = informer(self.DEPLOYMENTS, transform=transform, spec_follows_generation=True)
        inf._apply_event("ADDED", self.deployment(1, ready=0))
        first = inf.store.get("ns/w-worker")
        assert first is not None
        before = copy.deepcopy(first)
        inf._apply_event("MODIFIED", self.deployment(1, ready=1))
        second = inf.store.get("ns/w-worker")
        assert second is not None
        assert second["status"] == {"readyReplicas": 1}
        assert second["spec"] is first["spec"]  # reused, not decoded and hashed again
        assert second["metadata"]["labels"] is first["metadata"]["labels"]
        assert second["metadata"]["ownerReferences"] is first["metadata"]["ownerReferences"]
        assert len(hashed) == 1
        assert first == before  # the cached version is read-only

    def test_a_new_generation_brings_its_own_spec(self) -> None:
        from ojsctrl.runtime.apply import compact_template

        inf = informer(self.DEPLOYMENTS, transform=compact_template, spec_follows_generation=True)
        inf._apply_event("ADDED", self.deployment(1, ready=1))
        first = inf.store.get("ns/w-worker")
        inf._apply_event("MODIFIED", self.deployment(2, ready=1, image="ojs:2"))
        second = inf.store.get("ns/w-worker")
        assert first is not None and second is not None
        assert second["spec"] is not first["spec"]
        assert second["spec"]["template"] != first["spec"]["template"]  # a new digest
        assert second["metadata"]["labels"] is first["metadata"]["labels"]  # still equal: reused

    def test_a_recreated_object_reuses_nothing(self) -> None:
        inf = informer(self.DEPLOYMENTS, spec_follows_generation=True)
        inf._apply_event("ADDED", self.deployment(1, ready=1))
        first = inf.store.get("ns/w-worker")
        inf._apply_event("MODIFIED", self.deployment(1, ready=1, uid="u2", image="ojs:2"))
        second = inf.store.get("ns/w-worker")
        assert first is not None and second is not None
        assert second["spec"]["template"]["spec"]["containers"][0]["image"] == "ojs:2"
        assert second["metadata"]["labels"] is not first["metadata"]["labels"]

    def test_without_the_generation_rule_a_changed_spec_is_seen(self) -> None:
        # A kind whose generation may stand still while its spec changes (the rule is not asked): the spec
        # is never taken from the cache on the generation's word.
        inf = informer(self.DEPLOYMENTS)
        inf._apply_event("ADDED", self.deployment(1, ready=1))
        inf._apply_event("MODIFIED", self.deployment(1, ready=1, image="ojs:2"))
        second = inf.store.get("ns/w-worker")
        assert second is not None
        assert second["spec"]["template"]["spec"]["containers"][0]["image"] == "ojs:2"

    def test_changed_parts_are_taken_and_shared_as_usual(self) -> None:
        inf = informer(self.DEPLOYMENTS, spec_follows_generation=True)
        inf._apply_event("ADDED", self.deployment(1, ready=1))
        first = inf.store.get("ns/w-worker")
        changed = self.deployment(1, ready=1)
        changed["metadata"]["labels"]["team"] = "payments"
        inf._apply_event("MODIFIED", changed)
        second = inf.store.get("ns/w-worker")
        assert first is not None and second is not None
        assert second["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "ojsctrl", "team": "payments"}
        # The new label set is walked and shares its short values with the old one.
        assert (
            second["metadata"]["labels"]["app.kubernetes.io/managed-by"]
            is first["metadata"]["labels"]["app.kubernetes.io/managed-by"]
        )

    def test_a_relist_reuses_what_the_cache_holds(self) -> None:
        inf = informer(self.DEPLOYMENTS, spec_follows_generation=True)
        inf._replace(None, [self.deployment(1, ready=0)])
        first = inf.store.get("ns/w-worker")
        inf._replace(None, [self.deployment(1, ready=1)])
        second = inf.store.get("ns/w-worker")
        assert first is not None and second is not None
        assert second["spec"] is first["spec"]
        assert second["status"] == {"readyReplicas": 1}

    def test_the_factory_keeps_the_rule_once_asked(self) -> None:
        factory = InformerFactory(cast(Client, None))
        plain = factory.informer(self.DEPLOYMENTS)
        assert not plain.spec_follows_generation
        assert factory.informer(self.DEPLOYMENTS, spec_follows_generation=True) is plain
        assert plain.spec_follows_generation


def test_store_indexes_follow_random_upserts_and_deletes() -> None:
    # The store's index buckets (one key held as itself, two or more as a set) against a plain model: after
    # every step, each index value lists exactly the keys whose object yields it.
    rng = random.Random(7)
    owners = [f"owner-{i}" for i in range(4)]

    def owned(name: str, owner_names: list[str]) -> JSON:
        refs = [{"uid": o, "controller": i == 0} for i, o in enumerate(owner_names)]
        return {"metadata": {"name": name, "namespace": "ns", "ownerReferences": refs}}

    store = Store(DEFAULT_INDEXERS)
    model: dict[str, JSON] = {}
    for _ in range(2000):
        name = f"c{rng.randrange(12)}"
        key = f"ns/{name}"
        if rng.random() < 0.25:
            store.delete(key)
            model.pop(key, None)
        else:
            o = owned(name, rng.sample(owners, rng.randrange(0, 3)))
            store.upsert(key, o)
            model[key] = o
        for index, fn in DEFAULT_INDEXERS.items():
            expected: dict[str, set[str]] = {}
            for k, o in model.items():
                for value in fn(o):
                    expected.setdefault(value, set()).add(k)
            assert set(store.index_values(index)) == set(expected)
            for value, keys in expected.items():
                assert sorted(object_key_of(o) for o in store.by_index(index, value)) == sorted(keys)


def object_key_of(o: JSON) -> str:
    return f"{o['metadata']['namespace']}/{o['metadata']['name']}"
