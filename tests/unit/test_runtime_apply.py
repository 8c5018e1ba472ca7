"""The applier's pure parts: the body hash and the compact pod template of cached Deployments."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ojsctrl.runtime.apply import TEMPLATE_DIGEST, canonical_hash, compact_template


def deployment(env: int = 1, volumes: list[Any] | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "containers": [
            {
                "name": "server",
                "image": "img:1",
                "env": [{"name": f"E{i}", "value": "x" * 50} for i in range(env)],
            }
        ]
    }
    if volumes is not None:
        pod["volumes"] = volumes
    return {
        "metadata": {"name": "d", "namespace": "ns"},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod}},
        "status": {"readyReplicas": 2},
    }


def test_hash_is_sha256_of_the_sorted_body_whatever_its_size() -> None:
    for env in (1, 40, 400):  # under one piece, a few pieces, many pieces of 2,047 bytes
        body = deployment(env)
        plain = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        assert canonical_hash(body) == plain
    assert canonical_hash({"b": 1, "a": 2}) == canonical_hash({"a": 2, "b": 1})


def test_compact_template_keeps_digest_volumes_and_everything_else() -> None:
    claim = [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]
    full = deployment(3, claim)
    digest = canonical_hash(full["spec"]["template"])
    compact = compact_template(orjson.loads(orjson.dumps(full)))
    assert compact["spec"]["template"] == {TEMPLATE_DIGEST: digest, "spec": {"volumes": claim}}
    assert compact["spec"]["replicas"] == 2 and compact["status"] == full["status"]
    assert compact["metadata"] == full["metadata"]
    # Idempotent, and a changed template changes the digest.
    assert compact_template(compact)["spec"]["template"][TEMPLATE_DIGEST] == digest
    edited = compact_template(deployment(4, claim))
    assert edited["spec"]["template"][TEMPLATE_DIGEST] != digest
    # No volumes: the digest alone; no template at all: left as it is.
    assert compact_template(deployment(1))["spec"]["template"].keys() == {TEMPLATE_DIGEST}
    assert compact_template({"metadata": {}, "spec": {}}) == {"metadata": {}, "spec": {}}


def test_the_applier_forgets_its_write_once_the_cache_shows_it() -> None:
    # The applier remembers the resourceVersion its apply produced while the cache lags behind it; a cached
    # copy at that version or later ends the entry (no request: the child matches the body).
    from typing import cast

    from ojsctrl.runtime.apply import Applier
    from ojsctrl.runtime.client import CONFIGMAPS, Client

    hash_key = "ojs.openjobspec.dev/applied-hash"
    ref = {"apiVersion": "v1", "kind": "Owner", "name": "o", "uid": "o1", "controller": True}
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns", "ownerReferences": [ref]},
        "data": {"a": "1"},
    }
    digest = canonical_hash({**body, "metadata": {**body["metadata"], "annotations": {}}})

    def cached(rv: str) -> dict[str, Any]:
        meta = {**body["metadata"], "annotations": {hash_key: digest}, "uid": "c1", "resourceVersion": rv}
        return {**body, "metadata": meta}

    applier = Applier(cast(Client, None), "ojsctrl", hash_key)
    key = (CONFIGMAPS, "ns/c")
    applier._recent[key] = (digest, 10)
    lagging = applier.ensure(CONFIGMAPS, body, "o1", cached("9"), in_cache=True)
    assert not lagging.written
    assert applier._recent.get(key) == (digest, 10)  # the cache is behind: kept
    caught_up = applier.ensure(CONFIGMAPS, body, "o1", cached("10"), in_cache=True)
    assert not caught_up.written
    assert applier._recent.get(key) is None


def test_the_applier_maps_forget_their_oldest_entries_past_their_bound() -> None:
    from ojsctrl.runtime.apply import _Bounded

    m: _Bounded[str, int] = _Bounded(maxsize=3)
    for i, k in enumerate("abc"):
        m[k] = i
    m["a"] = 10  # written again: the newest
    m["d"] = 3
    assert "b" not in m and len(m) == 3
    assert (m.get("a"), m.get("c"), m.get("d")) == (10, 2, 3)


HASH_KEY = "ojs.openjobspec.dev/applied-hash"
OWNER_REF = {"apiVersion": "v1", "kind": "Owner", "name": "o", "uid": "o1", "controller": True}


def scaled_body(replicas: int) -> dict[str, Any]:
    """A Deployment apply body as a reconciler builds it, with ``replicas``."""
    body = deployment()
    del body["status"]
    body["apiVersion"], body["kind"] = "apps/v1", "Deployment"
    body["metadata"]["ownerReferences"] = [OWNER_REF]
    body["spec"]["replicas"] = replicas
    return body


def live_child(body: dict[str, Any], annotation: str, replicas: int) -> dict[str, Any]:
    """The live Deployment: ``body`` as applied (its hash annotation ``annotation``), at ``replicas``."""
    live = orjson.loads(orjson.dumps(body))
    live["metadata"].update(
        {"annotations": {HASH_KEY: annotation}, "uid": "d1", "resourceVersion": "7", "generation": 2}
    )
    live["spec"]["replicas"] = replicas
    return dict(live)


def test_the_applied_hash_leaves_the_replicas_out_and_returns_them() -> None:
    from ojsctrl.runtime.apply import body_digest

    two, three = scaled_body(2), scaled_body(3)
    assert body_digest(two)[0] == body_digest(three)[0]
    assert (body_digest(two)[1], body_digest(three)[1]) == (2, 3)
    other = scaled_body(2)
    other["spec"]["template"]["metadata"]["labels"]["a"] = "c"
    assert body_digest(other)[0] != body_digest(two)[0]
    # Sending the field or not changes the hash: the apply that stops sending it hands the field over.
    no_replicas = scaled_body(2)
    del no_replicas["spec"]["replicas"]
    assert body_digest(no_replicas) == (canonical_hash(no_replicas), None)
    assert body_digest(no_replicas)[0] != body_digest(two)[0]


def test_yielding_to_another_replicas_writer_writes_nothing() -> None:
    # ojsctrl applied 2 replicas; an HPA then set 3. While it yields, the reconciler sends the HPA's count:
    # the body differs from the last apply only in the replicas, which the live child already holds, so
    # nothing is written (the applier has no client here: a request would fail the test).
    from typing import cast

    from ojsctrl.runtime.apply import Applier, body_digest
    from ojsctrl.runtime.client import DEPLOYMENTS, Client

    applier = Applier(cast(Client, None), "ojsctrl", HASH_KEY)
    applied = scaled_body(2)
    annotated = {**applied, "metadata": {**applied["metadata"], "annotations": {}}}
    live = live_child(applied, body_digest(annotated)[0], replicas=3)
    out = applier.ensure(DEPLOYMENTS, scaled_body(3), "o1", live, in_cache=True)
    assert not out.written and out.obj is live


def test_a_child_applied_by_an_earlier_release_is_not_written_again() -> None:
    # Earlier releases hashed the whole body, replicas included: the same body matches that hash too.
    from typing import cast

    from ojsctrl.runtime.apply import Applier
    from ojsctrl.runtime.client import DEPLOYMENTS, Client

    applier = Applier(cast(Client, None), "ojsctrl", HASH_KEY)
    body = scaled_body(2)
    legacy = canonical_hash({**body, "metadata": {**body["metadata"], "annotations": {}}})
    out = applier.ensure(DEPLOYMENTS, scaled_body(2), "o1", live_child(body, legacy, 2), in_cache=True)
    assert not out.written
