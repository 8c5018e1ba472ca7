"""Issue 18's smaller findings: names the operator dials, owned-list no-op detection, the metadata-only Secret
cache, the salted template hash, the previous owner's re-queue, one event per name conflict, samples."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ojsctrl import cli
from ojsctrl.builders import cluster as cb
from ojsctrl.builders import worker as wb
from ojsctrl.builders.common import config_hash
from ojsctrl.controllers.common import ConflictEvents
from ojsctrl.ojs.client import DEFAULT_URL_TEMPLATE, url_for, validate_url_template
from ojsctrl.runtime.apply import is_subset
from ojsctrl.runtime.client import Client, ClientOptions
from ojsctrl.runtime.controller import Controller, Request
from ojsctrl.runtime.events import EventRecorder
from ojsctrl.runtime.informer import LAST_APPLIED, strip_last_applied
from tests.unit.test_builders_common import NS, make_cluster, make_worker

CLUSTER = make_cluster({"backend": {"type": "redis", "embedded": True}})
SAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "samples"


# --- full cluster-domain names (design.md §cluster-domain) --------------------------------------------------


def test_default_url_template_is_the_full_cluster_domain_name() -> None:
    assert url_for(DEFAULT_URL_TEMPLATE, "c1", "ns") == "http://c1-server.ns.svc.cluster.local:8080"
    assert (
        url_for(DEFAULT_URL_TEMPLATE, "c1", "ns", cluster_domain="corp.example")
        == "http://c1-server.ns.svc.corp.example:8080"
    )
    validate_url_template("https://{service}.{namespace}.svc.{cluster_domain}:{port}")
    with pytest.raises(ValueError, match="cluster_domain"):
        validate_url_template("http://{service}.{domain}:{port}")


def test_endpoint_and_workers_ojs_url_use_the_cluster_domain() -> None:
    assert cb.endpoint(CLUSTER).endswith(".svc.cluster.local:8080")
    assert cb.endpoint(CLUSTER, "k8s.internal") == (f"http://c1-server.{NS}.svc.k8s.internal:8080")
    dep = wb.worker_deployment(
        make_worker({}), CLUSTER, config_hash="h", replicas=1, cluster_domain="k8s.internal"
    )
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OJS_URL"] == cb.endpoint(CLUSTER, "k8s.internal")
    assert ".svc:" not in env["OJS_URL"]


def test_generated_redis_url_uses_the_cluster_domain() -> None:
    secret = cb.redis_secret(CLUSTER, "pw", "k8s.internal")
    import base64

    url = base64.b64decode(secret["data"]["url"]).decode()
    assert "-redis." in url and url.endswith(".svc.k8s.internal:6379/0")


def parse(*args: str) -> argparse.Namespace:
    ns: argparse.Namespace = cli.build_parser().parse_args(list(args))
    return ns


def test_cluster_domain_flag_defaults_and_validation(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse().cluster_domain == "cluster.local"
    assert parse("--cluster-domain", "Corp.Example").cluster_domain == "corp.example"
    assert "{cluster_domain}" in parse().ojs_url_template
    for bad in ("", "-bad.local", "a..b", "under_score.local", "x" * 64 + ".local", "dot.local."):
        with pytest.raises(SystemExit):
            parse("--cluster-domain", bad)
        assert "--cluster-domain" in capsys.readouterr().err


# --- owned lists another field manager appends to -----------------------------------------------------------


def test_entries_another_manager_added_to_a_keyed_list_do_not_count() -> None:
    ours = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    theirs = {"env": [{"name": "A", "value": "1"}, {"name": "X", "value": "x"}, {"name": "B", "value": "2"}]}
    assert is_subset(ours, theirs)
    ports = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert is_subset(
        ports, {"ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}, {"containerPort": 9}]}
    )
    # Our own entries still count: a changed value, a missing entry or a reordering asks for an apply.
    assert not is_subset(
        ours, {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "X"}]}
    )
    assert not is_subset(ours, {"env": [{"name": "A", "value": "1"}, {"name": "X"}, {"name": "Y"}]})
    assert not is_subset(
        ours, {"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}, {"name": "X"}]}
    )
    # Lists without a merge key (args, envFrom) are atomic: any difference counts.
    assert not is_subset({"args": ["a"]}, {"args": ["a", "b"]})
    assert not is_subset(
        {"envFrom": [{"configMapRef": {"name": "c"}}]}, {"envFrom": [{"configMapRef": {"name": "c"}}, {}]}
    )


# --- the metadata-only Secret cache -------------------------------------------------------------------------


def test_last_applied_annotation_is_dropped_from_metadata_only_objects() -> None:
    obj = {
        "metadata": {
            "name": "s",
            "annotations": {LAST_APPLIED: json.dumps({"data": {"k": "c2VjcmV0"}}), "team": "a"},
        }
    }
    assert strip_last_applied(obj)["metadata"]["annotations"] == {"team": "a"}


# --- the salted pod-template hash ---------------------------------------------------------------------------


def test_template_hash_of_secret_values_is_salted_per_object_and_stable() -> None:
    plain = hashlib.sha256(json.dumps(["password"]).encode()).hexdigest()
    assert config_hash(b"password") == plain  # unsalted: what an unsalted table would find
    one = config_hash(b"password", salt="uid-1")
    assert one != plain and len(one) == 64
    assert one == config_hash(b"password", salt="uid-1")  # stable across calls (and restarts: no state)
    assert one != config_hash(b"password", salt="uid-2")  # equal keys in two objects look different
    assert one != config_hash(b"password2", salt="uid-1")


# --- owned-object events map to the old owner too -----------------------------------------------------------


def test_previous_owner_is_requeued_when_the_owner_reference_changes() -> None:
    c = Controller("t", lambda req: None)

    def owner(obj: dict[str, Any]) -> list[Request]:
        return [Request(obj["metadata"]["namespace"], r["name"]) for r in obj["metadata"]["ownerReferences"]]

    handler = c._handler(owner, [], "Deployment")
    old = {"metadata": {"namespace": "ns", "name": "d", "ownerReferences": [{"name": "a"}]}}
    new = {"metadata": {"namespace": "ns", "name": "d", "ownerReferences": [{"name": "b"}]}}
    handler.update(old, new)
    got = set()
    while len(c.queue):
        item, _ = c.queue.get(timeout=1)
        got.add(item)
        c.queue.done(item)
    assert got == {Request("ns", "a"), Request("ns", "b")}


# --- one event per name conflict ----------------------------------------------------------------------------


class Recorded(EventRecorder):
    """The real recorder with its sending replaced by a list (no API server needed to count events)."""

    def __init__(self) -> None:
        from kubernetes import client as k8s

        cfg = k8s.Configuration()
        cfg.host = "http://127.0.0.1:9"  # never called: event() is overridden
        super().__init__(Client(cfg, ClientOptions()), "test")
        self.sent: list[tuple[str, str, str]] = []

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.sent.append((type_, reason, message))


def test_a_name_conflict_makes_one_event_not_one_per_reconcile() -> None:
    rec = Recorded()
    events = ConflictEvents(rec)
    obj = {"metadata": {"namespace": "ns", "name": "c"}}
    for _ in range(5):
        events.report(obj, ["Secret ns/c-api-key exists and is not owned by this resource"])
    assert [r for _, r, _ in rec.sent] == ["NameConflict"]
    events.report(
        obj, ["Secret ns/c-api-key exists and is not owned by this resource", "Service ns/c-server x"]
    )
    assert rec.sent[-1][2] == "Service ns/c-server x"  # only the new one
    events.report(obj, [])
    events.report(obj, ["Service ns/c-server x"])  # gone and back: news again
    assert len(rec.sent) == 3


# --- samples ------------------------------------------------------------------------------------------------


def test_no_sample_puts_an_object_in_the_operators_namespace() -> None:
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert (doc.get("metadata") or {}).get("namespace") != "ojs-system", path.name


def test_the_metadata_only_secret_cache_never_holds_last_applied_data() -> None:
    from kubernetes import client as k8s

    from ojsctrl.runtime.client import SECRETS
    from ojsctrl.runtime.informer import Informer

    cfg = k8s.Configuration()
    cfg.host = "http://127.0.0.1:9"  # never called: only the object preparation runs
    inf = Informer(Client(cfg, ClientOptions()), SECRETS, metadata_only=True)
    applied = json.dumps({"apiVersion": "v1", "kind": "Secret", "data": {"k": "c2VjcmV0"}})
    obj = {
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "annotations": {LAST_APPLIED: applied, "team": "a"},
            "managedFields": [{"manager": "kubectl"}],
        }
    }
    kept = inf._prepare(obj)
    assert kept["metadata"]["annotations"] == {"team": "a"}
    assert "managedFields" not in kept["metadata"]
    assert "c2VjcmV0" not in json.dumps(kept)
