"""The generated CRDs: committed copies are current, schemas are structural, CEL inputs are bounded."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ojsctrl.api import OJSClusterSpec, OJSWorkerSpec, crdgen, validate_cluster, validate_worker
from ojsctrl.api.durations import DURATION_PATTERN, is_duration
from ojsctrl.api.markers import PERCENT_PATTERN
from ojsctrl.api.validation import PYTHON_ONLY_RULES
from ojsctrl.api.worker import CLUSTER_REF_MESSAGE
from tests.harness.kube import missing_tool

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crds"
EXTRACT = REPO / "hack" / "k8s-openapi" / "extract.py"


def _crds() -> dict[str, dict[str, Any]]:
    return {c["spec"]["names"]["kind"]: c for c in crdgen.generate_crds()}


def _schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = _crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")
    for i, alt in enumerate(node.get("anyOf") or []):
        yield from _nodes(alt, f"{path}<anyOf{i}>")


def test_committed_crds_are_current() -> None:
    expected = crdgen.rendered_files()
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(expected)
    for name, text in expected.items():
        assert (CRD_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run `python -m ojsctrl.api.crdgen`"
        )


def test_generation_is_deterministic() -> None:
    assert crdgen.rendered_files() == crdgen.rendered_files()
    assert crdgen.main(["--check", "--out", str(CRD_DIR)]) == 0


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0


def test_committed_yaml_parses_to_the_generated_objects() -> None:
    for crd in crdgen.generate_crds():
        (doc,) = list(yaml.safe_load_all((CRD_DIR / crdgen.file_name(crd)).read_text(encoding="utf-8")))
        assert doc == crd


@pytest.mark.parametrize("kind", ["OJSCluster", "OJSWorker"])
def test_schema_is_structural(kind: str) -> None:
    schema = _schema(kind)
    assert schema["type"] == "object"
    assert schema["properties"]["metadata"] == {"type": "object"}
    text = json.dumps(schema)
    assert "$ref" not in text and "allOf" not in text and "oneOf" not in text and '"not"' not in text
    allowed_untyped = {"x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields"}
    for path, node in _nodes(schema):
        if "<anyOf" in path:
            continue
        if allowed_untyped & node.keys():
            if node.get("x-kubernetes-int-or-string"):
                assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "type" in node, f"{path} has no type"
        assert "anyOf" not in node, path
        if "properties" in node or "additionalProperties" in node:
            assert node["type"] == "object", path
            assert not ("properties" in node and "additionalProperties" in node), path
        if node["type"] == "array":
            assert isinstance(node.get("items"), dict), path
        for key in node:
            assert not key.startswith("x-kubernetes-") or key in {
                "x-kubernetes-int-or-string",
                "x-kubernetes-list-map-keys",
                "x-kubernetes-list-type",
                "x-kubernetes-map-type",
                "x-kubernetes-validations",
            }, f"{path}: {key}"
        if node.get("x-kubernetes-list-type") == "set":
            assert node["items"]["type"] in ("string", "integer", "number", "boolean"), path
        if node.get("x-kubernetes-list-type") == "map":
            items = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in items.get("required", []) or "default" in items["properties"][key], (
                    f"{path}: {key}"
                )


@pytest.mark.parametrize("kind", ["OJSCluster", "OJSWorker"])
def test_every_field_has_a_description(kind: str) -> None:
    missing = [
        path
        for path, node in _nodes(_schema(kind))
        if path
        and path != ".metadata"
        and "<anyOf" not in path
        and "[]" not in path[-2:]
        and "{}" not in path[-2:]
        and not node.get("description")
    ]
    assert missing == []


_SELF_REF = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)*)")


def _resolve(node: dict[str, Any], chain: list[str]) -> dict[str, Any] | None:
    for name in chain:
        node = (node.get("properties") or {}).get(name)  # type: ignore[assignment]
        if node is None:
            return None
    return node


@pytest.mark.parametrize("kind", ["OJSCluster", "OJSWorker"])
def test_strings_and_lists_read_by_cel_are_bounded(kind: str) -> None:
    checked = 0
    for path, node in _nodes(_schema(kind)):
        for rule in node.get("x-kubernetes-validations", []):
            for match in _SELF_REF.finditer(rule["rule"]):
                chain = [p for p in match.group(1).split(".") if p]
                if path == "" and chain[:1] == ["metadata"]:
                    continue  # the API server caps metadata.name itself
                target = _resolve(node, chain)
                # A trailing segment can be a CEL method (self.x.matches): drop it and retry.
                while target is None and chain:
                    chain = chain[:-1]
                    target = _resolve(node, chain)
                assert target is not None, (path, rule["rule"])
                checked += 1
                kind_of = target.get("type", "string" if target.get("x-kubernetes-int-or-string") else None)
                if kind_of == "string":
                    assert "maxLength" in target, f"{path}.{'.'.join(chain)} read by {rule['rule']!r}"
                if kind_of == "array":
                    assert "maxItems" in target, f"{path}.{'.'.join(chain)} read by {rule['rule']!r}"
    assert checked > 10


def _cel_string_literals(rule: str) -> list[str]:
    literals = re.findall(r"'((?:[^'\\]|\\.)*)'", rule)
    out = []
    for lit in literals:
        # CEL rejects unknown escapes such as "\." - every backslash must be an escaped backslash.
        assert re.fullmatch(r"(?:[^\\]|\\\\)*", lit), f"bad escape in {lit!r}"
        out.append(lit.replace("\\\\", "\\"))
    return out


def test_cel_regexes_match_the_python_ones() -> None:
    seen: set[str] = set()
    for kind in ("OJSCluster", "OJSWorker"):
        for _, node in _nodes(_schema(kind)):
            for rule in node.get("x-kubernetes-validations", []):
                for lit in _cel_string_literals(rule["rule"]):
                    if lit.startswith("^"):
                        seen.add(lit)
    assert DURATION_PATTERN in seen
    assert PERCENT_PATTERN in seen
    duration_re = re.compile(DURATION_PATTERN)
    for text in ["0", "30s", "1h30m", "1.5h", "250ms", "", "-1s", "1d", ".5s", "5.s", "1h 2m"]:
        assert bool(duration_re.fullmatch(text)) is is_duration(text), text


def test_duration_rules_guard_duration_calls() -> None:
    for kind in ("OJSCluster", "OJSWorker"):
        for path, node in _nodes(_schema(kind)):
            for rule in node.get("x-kubernetes-validations", []):
                text = rule["rule"]
                if "duration(self" in text:
                    assert text.index(".matches(") < text.index("duration(self"), (path, text)


def test_names_scope_and_subresources() -> None:
    crds = _crds()
    for kind, short, plural in (("OJSCluster", "ojs", "ojsclusters"), ("OJSWorker", "ojsw", "ojsworkers")):
        crd = crds[kind]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["metadata"]["name"] == f"{plural}.ojs.openjobspec.dev"
        spec = crd["spec"]
        assert spec["group"] == "ojs.openjobspec.dev"
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["shortNames"] == [short]
        # A category named like a short name makes kubectl expand `get ojs NAME` to both kinds.
        assert spec["names"]["categories"] == ["openjobspec"]
        assert set(spec["names"]["categories"]).isdisjoint(spec["names"]["shortNames"])
        assert spec["names"]["plural"] == plural
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"]["status"] == {}
    for kind in ("OJSCluster", "OJSWorker"):
        assert crds[kind]["spec"]["versions"][0]["subresources"]["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
        status = _schema(kind)["properties"]["status"]["properties"]
        assert status["selector"]["type"] == "string"
        assert status["replicas"]["type"] == "integer"


def test_printer_columns() -> None:
    def columns(kind: str) -> list[str]:
        return [c["name"] for c in _crds()[kind]["spec"]["versions"][0]["additionalPrinterColumns"]]

    assert columns("OJSCluster") == ["Backend", "Replicas", "Ready", "Phase", "Queue Depth", "Age"]
    assert columns("OJSWorker") == ["Cluster", "Replicas", "Ready", "Queue Depth", "Phase", "Age"]
    for kind in ("OJSCluster", "OJSWorker"):
        schema = _schema(kind)
        for column in _crds()[kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
            chain = column["jsonPath"].lstrip(".").split(".")
            if chain[0] == "metadata":
                continue
            target = _resolve(schema, chain)
            assert target is not None, column
            assert target["type"] == column["type"], column


def test_defaults_enums_and_bounds() -> None:
    cluster = _schema("OJSCluster")["properties"]["spec"]["properties"]
    worker = _schema("OJSWorker")["properties"]["spec"]["properties"]
    assert cluster["backend"]["properties"]["type"]["enum"] == [
        "redis",
        "postgres",
        "nats",
        "kafka",
        "sqs",
        "lite",
    ]
    assert cluster["backend"]["required"] == ["type"]
    assert cluster["backend"]["properties"]["embedded"]["default"] is False
    assert cluster["backend"]["properties"]["redis"]["properties"]["image"]["default"] == "redis:7-alpine"
    assert "default" not in cluster["replicas"]  # 2, or 1 for lite: applied by the reconciler
    assert cluster["replicas"]["minimum"] == 1
    assert "default" not in cluster["image"]  # the operator's --server-image flag
    assert cluster["resources"]["default"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    auto = cluster["autoScaling"]["properties"]
    assert (auto["scaleUpCooldown"]["default"], auto["scaleDownCooldown"]["default"]) == ("60s", "300s")
    assert auto["minReplicas"]["minimum"] == 1
    assert cluster["monitoring"]["properties"]["interval"]["default"] == "30s"
    pdb = cluster["podDisruptionBudget"]["properties"]
    assert "default" not in pdb["maxUnavailable"] and "default" not in pdb["enabled"]
    assert "default" not in cluster["autoScaling"]  # sections are not materialised

    assert worker["queues"]["default"] == ["default"]
    assert worker["queues"]["items"]["minLength"] == 1
    assert worker["jobTypes"]["minItems"] == 1 and worker["jobTypes"]["items"]["minLength"] == 1
    assert worker["concurrency"] == {
        "description": worker["concurrency"]["description"],
        "type": "integer",
        "format": "int32",
        "minimum": 0,
        "maximum": 2**31 - 1,
        "default": 0,
    }
    assert worker["replicas"]["default"] == 1 and worker["replicas"]["minimum"] == 0
    wauto = worker["autoScaling"]["properties"]
    assert (
        wauto["metric"]["enum"] == ["queueDepth", "waitTime", "cpu"]
        and wauto["metric"]["default"] == "queueDepth"
    )
    assert (wauto["minReplicas"]["default"], wauto["maxReplicas"]["default"]) == (1, 10)
    assert wauto["minReplicas"]["minimum"] == 0
    assert "default" not in wauto["targetJobsPerWorker"] and wauto["targetJobsPerWorker"]["minimum"] == 1
    assert wauto["targetJobsPerWorker"]["format"] == "int64"
    assert wauto["scaleUpThreshold"]["default"] == 0
    assert (wauto["scaleDownDelay"]["default"], wauto["pollingInterval"]["default"]) == ("5m", "30s")
    assert wauto["cpuUtilization"]["default"] == 80
    shutdown = worker["gracefulShutdown"]["properties"]
    assert shutdown["timeoutSeconds"]["default"] == 30 and shutdown["drainBeforeShutdown"]["default"] is False
    assert {"rule": "self == oldSelf", "message": "clusterRef is immutable"} in worker["clusterRef"][
        "x-kubernetes-validations"
    ]
    assert _schema("OJSWorker")["properties"]["spec"]["required"] == ["clusterRef", "image", "jobTypes"]


def test_status_schema() -> None:
    cluster = _schema("OJSCluster")["properties"]["status"]["properties"]
    worker = _schema("OJSWorker")["properties"]["status"]["properties"]
    assert cluster["phase"]["enum"] == ["Pending", "Running", "Scaling", "Degraded", "Error"]
    assert worker["phase"]["enum"] == ["Pending", "Running", "Scaling", "Draining", "Error"]
    assert cluster["queues"]["maxItems"] == 20
    for status in (cluster, worker):
        conditions = status["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "lastTransitionTime"}
        assert status["lastScaleTime"]["format"] == "date-time"
    assert worker["selector"]["type"] == "string"
    for key in (
        "replicas",
        "readyReplicas",
        "queueDepth",
        "activeJobs",
        "endpoint",
        "image",
        "observedGeneration",
    ):
        assert key in cluster
    for key in (
        "replicas",
        "readyReplicas",
        "desiredReplicas",
        "queueDepth",
        "activeJobs",
        "observedGeneration",
    ):
        assert key in worker


def test_kubernetes_types_are_embedded_whole() -> None:
    spec = _schema("OJSWorker")["properties"]["spec"]["properties"]
    env_item = spec["env"]["items"]["properties"]
    assert "fieldRef" in env_item["valueFrom"]["properties"]
    assert "resourceFieldRef" in env_item["valueFrom"]["properties"]
    assert spec["env"]["x-kubernetes-list-type"] == "map"
    affinity = spec["affinity"]["properties"]
    assert {"nodeAffinity", "podAffinity", "podAntiAffinity"} <= affinity.keys()
    term = affinity["podAntiAffinity"]["properties"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "items"
    ]
    assert "labelSelector" in term["properties"] and "topologyKey" in term["properties"]
    assert (
        spec["resources"]["properties"]["limits"]["additionalProperties"]["x-kubernetes-int-or-string"]
        is True
    )
    assert spec["topologySpreadConstraints"]["x-kubernetes-list-map-keys"] == [
        "topologyKey",
        "whenUnsatisfiable",
    ]
    assert set(spec["securityContext"]["properties"]) == {
        "runAsNonRoot",
        "runAsUser",
        "runAsGroup",
        "fsGroup",
        "readOnlyRootFilesystem",
    }
    for path, node in _nodes(spec["affinity"]):
        assert "default" not in node, path  # no materialised "" / {} in users' objects
    # The one default apiextensions requires: a list-map key that is not required.
    assert spec["imagePullSecrets"]["items"]["properties"]["name"]["default"] == ""


def _extract_module() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_openapi_extract", EXTRACT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k8s_schemas_match_the_pinned_openapi_spec() -> None:
    go = shutil.which("go")
    if go is None:
        missing_tool("go is not installed (the control-plane build, hack/build-controlplane.sh, brings it)")
    extract = _extract_module()
    version = extract.pinned_version()
    cache = subprocess.run(
        [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    spec_file = Path(cache) / f"k8s.io/kubernetes@{version}" / extract.SPEC_IN_MODULE
    if not spec_file.exists():
        missing_tool(f"k8s.io/kubernetes@{version} is not in the Go module cache")
    produced = extract.extract(json.loads(spec_file.read_text(encoding="utf-8")), version)
    committed = json.loads(crdgen.K8S_SCHEMAS.read_text(encoding="utf-8"))
    assert produced == committed, "run `python hack/k8s-openapi/extract.py`"


# --- the API server's own code: CRD acceptance, CEL/Python agreement ----------------------------------------

CRDCHECK = REPO / "hack" / "k8s-openapi" / "crdcheck"


@pytest.fixture(scope="module")
def crdcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crdcheck tool (apiextensions-apiserver's validation, defaulting and CEL code), built with Go."""
    go = shutil.which("go")
    if go is None:
        missing_tool("go is not installed (the control-plane build, hack/build-controlplane.sh, brings it)")
    binary = tmp_path_factory.mktemp("crdcheck") / "crdcheck"
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    try:
        subprocess.run(
            [go, "build", "-o", str(binary), "."],
            cwd=CRDCHECK,
            env=env,
            check=True,
            capture_output=True,
            timeout=1200,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        # Only a missing module download ends here; the tool itself is tested by the runs below.
        missing_tool(f"cannot build crdcheck: {getattr(exc, 'stderr', b'')!r:.500}")
    return binary


def _run_crdcheck(
    binary: Path, kind: str, cases: list[dict[str, Any]], tmp_path: Path
) -> list[dict[str, Any]]:
    crd = CRD_DIR / crdgen.file_name(_crds()[kind])
    cases_file = tmp_path / f"{kind}.json"
    cases_file.write_text(json.dumps(cases), encoding="utf-8")
    out = subprocess.run(
        [str(binary), str(crd), str(cases_file)], capture_output=True, text=True, check=True, timeout=300
    )
    results: list[dict[str, Any]] = json.loads(out.stdout)
    return results


def test_api_server_accepts_the_crds(crdcheck: Path) -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        out = subprocess.run(
            [str(crdcheck), str(path)], check=False, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr


_BASES: dict[str, dict[str, Any]] = {
    "OJSCluster": {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSCluster",
        "metadata": {"name": "ojs"},
        "spec": {"backend": {"type": "redis", "embedded": True}},
    },
    "OJSWorker": {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSWorker",
        "metadata": {"name": "w"},
        "spec": {"clusterRef": "ojs", "jobTypes": ["a"], "image": "x:v1"},
    },
}
# Values likely to hit a rule's edge: bounds, durations, percentages, enum members, duplicates, empties.
# No integral floats such as 3.0: the API server re-encodes them as integers before a webhook sees them,
# but its CEL rules, evaluated on the decoded request, see a double.
_VALUES: list[Any] = [
    None, True, False, -1, 0, 1, 2, 3, 10, 2**31, 2.5, "", "x", "30s", "-5m", "1h", "2h", "0", "500ms",
    "1.5s", "1d", "50%", "150%", "100%", "7", "redis", "lite", "postgres", "kafka", "cpu", "queueDepth",
    "a,b", "a b", "1Gi", "-1Gi", "redis://r", ["a"], [], ["a", "a"], [""], ["x", "y"], [1], {},
    {"name": "s", "key": "k"}, {"name": "s"}, {"a": "b"}, {"app.kubernetes.io/name": "x"}, {"enabled": True},
    {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}, {"runAsNonRoot": True, "runAsUser": 0},
    {"runAsUser": -1}, {"storage": {"size": "1Gi"}}, {"minReplicas": 0, "metric": "cpu"},
    {"minAvailable": 1, "maxUnavailable": "10%"}, "sqs", {"region": "eu-west-1"}, {"region": "EU West"},
    {"url": "redis://r", "embedded": True}, {"urlSecretRef": {"name": "r", "key": "url"}},
]  # fmt: skip
_EMBEDDED = {
    "affinity",
    "env",
    "envFrom",
    "imagePullSecrets",
    "resources",
    "tolerations",
    "topologySpreadConstraints",
}


def _spec_paths(
    node: dict[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    out = []
    for name, child in (node.get("properties") or {}).items():
        out.append(((*prefix, name), child))
        if name not in _EMBEDDED:
            out.extend(_spec_paths(child, (*prefix, name)))
    return out


def _fits(value: Any, node: dict[str, Any]) -> bool:
    if node.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    expected = {"integer": int, "string": str, "boolean": bool, "array": list, "object": dict}.get(
        node.get("type", "")
    )
    if expected is int and isinstance(value, bool):
        return False
    return expected is not None and isinstance(value, expected)


def _fuzz_objects(kind: str, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    paths = _spec_paths(_schema(kind)["properties"]["spec"])
    objects = []
    for _ in range(count):
        obj = copy.deepcopy(_BASES[kind])
        for _ in range(rng.choice((1, 1, 2, 3))):
            (*parents, last), node = rng.choice(paths)
            parent = obj["spec"]
            for key in parents:
                if not isinstance(parent.get(key), dict):
                    parent[key] = {}
                parent = parent[key]
            # Mostly values of the right type, so that the cross-field rules get exercised too.
            typed = [v for v in _VALUES if _fits(v, node)]
            pool = typed if typed and rng.random() < 0.8 else _VALUES
            parent[last] = copy.deepcopy(rng.choice(pool))
        if rng.random() < 0.1:
            obj["metadata"]["name"] = rng.choice(["a" * 57, "a" * 64, "1abc", "a.b", "ok-name"])
        objects.append(obj)
    return objects


@pytest.mark.parametrize("kind", ["OJSCluster", "OJSWorker"])
def test_cel_and_python_agree(kind: str, crdcheck: Path, tmp_path: Path) -> None:
    """The CRD (schema + CEL) rejects exactly what Python rejects, leaving out the Python-only rules."""
    objects = _fuzz_objects(kind, 600, seed=20260101)
    cases: list[dict[str, Any]] = [{"obj": copy.deepcopy(o), "old": None} for o in objects]
    if kind == "OJSWorker":
        moved = copy.deepcopy(_BASES[kind])
        moved["spec"]["clusterRef"] = "other"
        objects.append(moved)
        cases.append({"obj": copy.deepcopy(moved), "old": copy.deepcopy(_BASES[kind])})
    results = _run_crdcheck(crdcheck, kind, cases, tmp_path)
    disagreements = []
    for case, obj, result in zip(cases, objects, results, strict=True):
        python = validate_cluster(obj) if kind == "OJSCluster" else validate_worker(obj, old=case["old"])
        python_rejects = any(e.rule not in PYTHON_ONLY_RULES for e in python.errors)
        if python_rejects != bool(result["errors"]):
            disagreements.append((obj["spec"], result["errors"], python.messages()))
    assert disagreements == []
    rejected = sum(1 for r in results if r["errors"])
    assert min(rejected, len(results) - rejected) >= 60  # the fuzzing reaches both outcomes


def test_defaulted_objects_parse_like_the_models_default(crdcheck: Path, tmp_path: Path) -> None:
    cluster, worker = (
        _run_crdcheck(crdcheck, kind, [{"obj": copy.deepcopy(_BASES[kind]), "old": None}], tmp_path)[0]
        for kind in ("OJSCluster", "OJSWorker")
    )
    assert cluster["errors"] == [] and worker["errors"] == []
    # The API server's defaults are the models' defaults.
    assert OJSClusterSpec.from_dict(cluster["obj"]["spec"]) == OJSClusterSpec.from_dict(
        _BASES["OJSCluster"]["spec"]
    )
    assert OJSWorkerSpec.from_dict(worker["obj"]["spec"]) == OJSWorkerSpec.from_dict(
        _BASES["OJSWorker"]["spec"]
    )
    assert worker["obj"]["spec"]["queues"] == ["default"]
    assert cluster["obj"]["spec"]["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}


@pytest.mark.parametrize(
    ("ref", "refused"),
    [
        ("ojs-production", False),
        ("ojs.production", False),
        ("a" * 253, False),
        ("ojs-system/ojs-production", True),
        ("OJS", True),
        ("-ojs", True),
        ("ojs_production", True),
        ("ojs\n", True),
    ],
)
def test_cluster_ref_is_a_name_in_the_workers_namespace(
    ref: str, refused: bool, crdcheck: Path, tmp_path: Path
) -> None:
    """The API server (CEL, no webhook needed) and Python refuse a clusterRef that is not a DNS-1123
    subdomain, both with the message that workers and clusters share a namespace."""
    obj = copy.deepcopy(_BASES["OJSWorker"])
    obj["spec"]["clusterRef"] = ref
    (result,) = _run_crdcheck(crdcheck, "OJSWorker", [{"obj": copy.deepcopy(obj), "old": None}], tmp_path)
    python = validate_worker(obj)
    if not refused:
        assert result["errors"] == [] and python.errors == []
        return
    assert any(CLUSTER_REF_MESSAGE in str(e) and "clusterRef" in str(e) for e in result["errors"]), result
    assert ("spec.clusterRef", CLUSTER_REF_MESSAGE) in [(e.path, e.message) for e in python.errors]
    assert "workers and clusters share a namespace" in CLUSTER_REF_MESSAGE
