"""The admission handlers: AdmissionReview request in, AdmissionReview response out."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from ojsctrl.runtime.client import NotFoundError
from ojsctrl.runtime.webhook import MAX_WARNING_LENGTH, MAX_WARNINGS, AdmissionResponse, clean_warnings
from ojsctrl.webhooks.handlers import (
    MAX_ERRORS_IN_MESSAGE,
    ClusterValidator,
    InformerClusterLookup,
    WorkerValidator,
)

CLUSTER: dict[str, Any] = {
    "apiVersion": "ojs.openjobspec.dev/v1alpha1",
    "kind": "OJSCluster",
    "metadata": {"name": "ojs", "namespace": "ns"},
    "spec": {"backend": {"type": "redis", "embedded": True}, "image": "ojs-server:v1"},
}
WORKER: dict[str, Any] = {
    "apiVersion": "ojs.openjobspec.dev/v1alpha1",
    "kind": "OJSWorker",
    "metadata": {"name": "w", "namespace": "ns"},
    "spec": {
        "clusterRef": "ojs",
        "jobTypes": ["email.send"],
        "image": "w:v1",
        "resources": {"limits": {"cpu": "1"}},
    },
}


def request(
    obj: Any, *, operation: str = "CREATE", old: Any = None, kind: str | None = None, namespace: str = "ns"
) -> dict[str, Any]:
    kind = kind or (obj or {}).get("kind") or "OJSCluster"
    return {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "ojs.openjobspec.dev", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "ojs.openjobspec.dev", "version": "v1alpha1", "resource": kind.lower() + "s"},
        "name": (obj or {}).get("metadata", {}).get("name", "") if isinstance(obj, dict) else "",
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "admin"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }


def review_response(resp: AdmissionResponse) -> dict[str, Any]:
    return resp.to_json("705ab4f5-6393-11e8-b7cc-42010a800002")


def test_valid_cluster_is_allowed_without_status() -> None:
    out = review_response(ClusterValidator()(request(CLUSTER)))
    assert out == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}


def test_denial_names_field_and_rule_like_a_validation_error() -> None:
    bad = copy.deepcopy(CLUSTER)
    bad["spec"]["backend"] = {"type": "postgres", "embedded": True}
    bad["spec"]["replicas"] = 0
    out = review_response(ClusterValidator()(request(bad)))
    assert out["allowed"] is False
    status = out["status"]
    assert status["code"] == 422 and status["reason"] == "Invalid" and status["status"] == "Failure"
    assert status["message"].startswith('OJSCluster.ojs.openjobspec.dev "ojs" is invalid: ')
    assert "spec.backend.embedded: " in status["message"] and "(rule embeddedRedisOnly)" in status["message"]
    assert "spec.replicas: " in status["message"] and "(rule minimum)" in status["message"]
    details = status["details"]
    assert (
        details["kind"] == "OJSCluster"
        and details["group"] == "ojs.openjobspec.dev"
        and details["name"] == "ojs"
    )
    fields = {c["field"]: c for c in details["causes"]}
    assert fields["spec.replicas"]["reason"] == "FieldValueInvalid"
    assert "(rule minimum)" in fields["spec.replicas"]["message"]


def test_cause_types_follow_api_conventions() -> None:
    bad = copy.deepcopy(WORKER)
    del bad["spec"]["image"]
    bad["spec"]["jobTypes"] = ["a", "a"]
    out = review_response(WorkerValidator()(request(bad)))
    reasons = {c["field"]: c["reason"] for c in out["status"]["details"]["causes"]}
    assert reasons["spec.image"] == "FieldValueRequired"
    assert reasons["spec.jobTypes[1]"] == "FieldValueDuplicate"


def test_message_is_bounded_but_causes_are_complete() -> None:
    bad = copy.deepcopy(WORKER)
    bad["spec"]["env"] = [{"name": f"A{i}=x"} for i in range(30)]
    out = review_response(WorkerValidator()(request(bad)))
    message = out["status"]["message"]
    assert message.count("(rule envName)") == MAX_ERRORS_IN_MESSAGE
    assert message.endswith("and 10 more")
    assert len(out["status"]["details"]["causes"]) == 30


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_delete_and_connect_are_always_allowed(operation: str) -> None:
    for handler in (ClusterValidator(), WorkerValidator()):
        out = review_response(handler(request({"junk": True}, operation=operation, kind="OJSCluster")))
        assert out["allowed"] is True


def test_wrong_kind_is_a_configuration_error() -> None:
    out = review_response(ClusterValidator()(request(WORKER)))
    assert out["allowed"] is False and out["status"]["code"] == 400
    assert "validates OJSCluster, not OJSWorker" in out["status"]["message"]


@pytest.mark.parametrize("junk", [None, "x", 1, []])
def test_objects_that_are_not_objects_are_denied(junk: Any) -> None:
    out = review_response(ClusterValidator()(request(junk, kind="OJSCluster")))
    assert out["allowed"] is False and "must be an object" in out["status"]["message"]


def test_warnings_are_returned_with_an_allowed_answer() -> None:
    obj = copy.deepcopy(CLUSTER)
    obj["spec"]["image"] = "ojs-server:latest"
    obj["spec"]["auth"] = {"disabled": True}
    out = review_response(ClusterValidator()(request(obj)))
    assert out["allowed"] is True
    assert any("latest" in w for w in out["warnings"])
    assert any("auth.disabled" in w for w in out["warnings"])


def test_denials_carry_warnings_too() -> None:
    obj = copy.deepcopy(CLUSTER)
    obj["spec"]["image"] = "ojs-server:latest"
    obj["spec"]["replicas"] = 0
    out = review_response(ClusterValidator()(request(obj)))
    assert out["allowed"] is False and any("latest" in w for w in out["warnings"])


def test_cluster_ref_lookup_gives_the_not_found_warning() -> None:
    calls: list[tuple[str, str]] = []

    def lookup(answer: bool | None) -> Any:
        def f(ns: str, name: str) -> bool | None:
            calls.append((ns, name))
            return answer

        return f

    missing = review_response(WorkerValidator(lookup(False))(request(WORKER, namespace="team-a")))
    assert missing["allowed"] is True
    assert any("clusterRef" in w and "'ojs'" in w and "not found" in w for w in missing["warnings"])
    assert calls == [("team-a", "ojs")]
    for answer in (True, None):
        out = review_response(WorkerValidator(lookup(answer))(request(WORKER)))
        assert "warnings" not in out
    # No lookup without a clusterRef to look up.
    calls.clear()
    no_ref = copy.deepcopy(WORKER)
    del no_ref["spec"]["clusterRef"]
    assert review_response(WorkerValidator(lookup(False))(request(no_ref)))["allowed"] is False
    assert calls == []


def test_cross_namespace_cluster_ref_is_denied_without_a_lookup() -> None:
    calls: list[tuple[str, str]] = []

    def lookup(ns: str, name: str) -> bool | None:
        calls.append((ns, name))
        return False

    moved = copy.deepcopy(WORKER)
    moved["spec"]["clusterRef"] = "ojs-system/ojs-production"
    out = review_response(WorkerValidator(lookup)(request(moved, namespace="team-a")))
    assert out["allowed"] is False
    status = out["status"]
    assert status["code"] == 422
    assert "spec.clusterRef: " in status["message"]
    assert "workers and clusters share a namespace" in status["message"]
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.clusterRef"]
    # A name with a '/' is never looked up (it would be a different URL path), nor warned about as missing.
    assert calls == []
    assert not any("not found" in w for w in out.get("warnings", []))


def test_update_checks_immutability_against_the_old_object() -> None:
    moved = copy.deepcopy(WORKER)
    moved["spec"]["clusterRef"] = "other"
    out = review_response(WorkerValidator()(request(moved, operation="UPDATE", old=WORKER)))
    assert out["allowed"] is False and "spec.clusterRef" in out["status"]["message"]
    assert "(rule immutable)" in out["status"]["message"]
    assert {c["reason"] for c in out["status"]["details"]["causes"]} == {"FieldValueForbidden"}
    # A create has no old object: the same spec is fine.
    assert review_response(WorkerValidator()(request(moved)))["allowed"] is True


def test_metadata_only_update_of_a_stored_invalid_object_passes_with_a_warning() -> None:
    stored = copy.deepcopy(WORKER)
    stored["spec"]["env"] = [{"name": "A=B"}]
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"team": "jobs"}
    out = review_response(WorkerValidator()(request(relabelled, operation="UPDATE", old=stored)))
    assert out["allowed"] is True
    assert any("stored OJSWorker is invalid" in w and "spec.env[0].name" in w for w in out["warnings"])
    # Changing the spec while it stays broken is denied.
    changed = copy.deepcopy(stored)
    changed["spec"]["replicas"] = 3
    out = review_response(WorkerValidator()(request(changed, operation="UPDATE", old=stored)))
    assert out["allowed"] is False


def test_update_of_an_object_being_deleted_passes() -> None:
    stored = copy.deepcopy(CLUSTER)
    stored["spec"]["replicas"] = 0
    deleting = copy.deepcopy(stored)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    deleting["metadata"]["finalizers"] = []
    deleting["spec"]["replicas"] = -1
    out = review_response(ClusterValidator()(request(deleting, operation="UPDATE", old=stored)))
    assert out["allowed"] is True


def test_generate_name_is_used_in_the_message() -> None:
    obj = copy.deepcopy(CLUSTER)
    obj["metadata"] = {"generateName": "ojs-"}
    obj["spec"]["replicas"] = 0
    out = review_response(ClusterValidator()(request(obj)))
    assert '"ojs-" is invalid' in out["status"]["message"]


def test_clean_warnings() -> None:
    long = "x" * 1000
    out = clean_warnings(["a\nb", "a b", long, *[f"w{i}" for i in range(40)]])
    assert out[0] == "a b"
    assert len(out[1]) == MAX_WARNING_LENGTH and out[1].endswith("...")
    assert len(out) == MAX_WARNINGS


def test_response_defaults() -> None:
    denied = AdmissionResponse.deny("no").to_json("u")
    assert denied["status"]["code"] == 403 and denied["status"]["reason"] == "Forbidden"
    assert AdmissionResponse(False, "x", code=200).to_json("u")["status"]["code"] == 403
    assert AdmissionResponse.allow(["w"]).to_json("u") == {"uid": "u", "allowed": True, "warnings": ["w"]}


# --------------------------------------------------------------------------- cluster lookup
class _Store:
    def __init__(self, names: set[tuple[str, str]]) -> None:
        self.names = names

    def get_by_name(self, ns: str | None, name: str) -> dict[str, Any] | None:
        return {"metadata": {"name": name}} if (ns, name) in self.names else None


class _Informer:
    def __init__(self, names: set[tuple[str, str]], synced: bool = True) -> None:
        self.store = _Store(names)
        self.synced = synced

    def has_synced(self) -> bool:
        return self.synced


class _Client:
    """Answers the confirming GET: exists, 404, error, or too slow."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[str] = []

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append(path)
        if self.answer == "404":
            raise NotFoundError(404, "NotFound", "not found")
        if self.answer == "error":
            raise RuntimeError("boom")
        if self.answer == "slow":
            time.sleep(1.0)
        return {"metadata": {"name": path.rsplit("/", 1)[-1]}}


def _lookup(
    client: _Client, informer: _Informer | None, namespaces: tuple[str, ...] = ()
) -> InformerClusterLookup:
    return InformerClusterLookup(client, informer, namespaces, get_timeout=0.3)  # type: ignore[arg-type]


def test_lookup_answers_from_the_cache_without_a_request() -> None:
    client = _Client("404")
    lookup = _lookup(client, _Informer({("ns", "ojs")}))
    assert lookup("ns", "ojs") is True
    assert client.calls == []
    lookup.close()


def test_lookup_confirms_a_cache_miss_with_a_get() -> None:
    for answer, expected in (("404", False), ("exists", True), ("error", None), ("slow", None)):
        client = _Client(answer)
        lookup = _lookup(client, _Informer(set()))
        started = time.monotonic()
        assert lookup("ns", "ojs") is expected, answer
        assert time.monotonic() - started < 0.9
        assert client.calls == ["/apis/ojs.openjobspec.dev/v1alpha1/namespaces/ns/ojsclusters/ojs"]
        lookup.close()


def test_lookup_does_not_trust_a_cache_that_does_not_cover_the_namespace() -> None:
    client = _Client("exists")
    lookup = _lookup(client, _Informer({("other", "ojs")}, synced=True), namespaces=("watched",))
    assert lookup("other", "ojs") is True
    assert len(client.calls) == 1
    unsynced = _lookup(_Client("404"), _Informer({("ns", "ojs")}, synced=False))
    assert unsynced("ns", "ojs") is False
    lookup.close()
    unsynced.close()


def test_backend_warnings_reach_the_review() -> None:
    obj = copy.deepcopy(CLUSTER)
    obj["spec"]["backend"] = {
        "type": "sqs",
        "sqs": {"region": "eu-west-1", "endpoint": "http://localstack:4566"},
    }
    obj["spec"]["grpc"] = {"enabled": True}
    obj["spec"]["env"] = [{"name": "SQS_USE_FIFO", "value": "true"}]
    out = review_response(ClusterValidator()(request(obj)))
    assert out["allowed"] is True
    warnings = out["warnings"]
    assert any(w.startswith("spec.backend.sqs.endpoint") and "test/test" in w for w in warnings), warnings
    assert any(w.startswith("spec.grpc.enabled") and "no authentication" in w for w in warnings), warnings
    assert any(w.startswith("spec.env[0]") and "SQS_USE_FIFO" in w for w in warnings), warnings


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({"backend": {"type": "lite"}, "replicas": 2}, "spec.replicas", "replicas must be 1"),
        (
            {"backend": {"type": "lite"}, "autoScaling": {"enabled": True}},
            "spec.autoScaling.enabled",
            "cannot be autoscaled",
        ),
        (
            {"backend": {"type": "sqs", "url": "https://sqs/q", "sqs": {"region": "eu-west-1"}}},
            "spec.backend.url",
            "backend.sqs",
        ),
        ({"backend": {"type": "kafka", "url": "k:9092"}}, "spec.backend.stateStore", "REDIS_URL"),
    ],
)
def test_backend_denials_name_the_field(spec: dict[str, Any], field: str, text: str) -> None:
    obj = {**copy.deepcopy(CLUSTER), "spec": spec}
    out = review_response(ClusterValidator()(request(obj)))
    assert out["allowed"] is False
    assert field in out["status"]["message"] and text in out["status"]["message"], out["status"]["message"]
