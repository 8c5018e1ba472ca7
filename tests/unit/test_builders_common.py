"""Shared builder helpers: labels, owner references, config hash, security contexts, env merge, pod settings.

Also home of the helpers the other builder tests import: object factories and a checker
of the `restricted` Pod Security Standard.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ojsctrl.api import API_VERSION, OJSCluster, OJSWorker, PodSettings
from ojsctrl.builders.common import (
    CONFIG_HASH_ANNOTATION,
    config_hash,
    container_security_context,
    default_spreading,
    merge_env,
    namespace_of,
    object_meta,
    owner_reference,
    pod_scheduling,
    pod_security_context,
    pod_template_metadata,
    selector_labels,
    selector_string,
    standard_labels,
)

NS = "team-a"


def make_cluster(spec: Mapping[str, Any], name: str = "c1", namespace: str = NS) -> OJSCluster:
    """An OJSCluster as read from the API server (namespace and uid set)."""
    return OJSCluster.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": "OJSCluster",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-cluster-{name}"},
            "spec": dict(spec),
        }
    )


def make_worker(spec: Mapping[str, Any], name: str = "w1", namespace: str = NS) -> OJSWorker:
    """An OJSWorker as read from the API server; clusterRef, jobTypes and image default to something valid."""
    full = {"clusterRef": "c1", "jobTypes": ["email.send"], "image": "example/worker:v1", **spec}
    return OJSWorker.from_dict(
        {
            "apiVersion": API_VERSION,
            "kind": "OJSWorker",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-worker-{name}"},
            "spec": full,
        }
    )


def with_identity(doc: Mapping[str, Any], namespace: str = NS) -> dict[str, Any]:
    """A README document as the API server returns it: namespace defaulted, uid assigned."""
    meta = dict(doc["metadata"])
    meta.setdefault("namespace", namespace)
    meta["uid"] = f"uid-{meta['name']}"
    return {**doc, "metadata": meta}


# --- the restricted Pod Security Standard (v1.30), as a checker --------------------------------------------

_RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def _all_containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod.get(kind) or ():
            yield f"{kind}[{c.get('name')}]", c


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every rule of the baseline and restricted Pod Security Standards the pod spec breaks."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"{field} set")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("pod hostProcess")
    for v in pod.get("volumes") or ():
        kinds = set(v) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {v.get('name')} of type {sorted(kinds - _RESTRICTED_VOLUME_TYPES)}")
    for sysctl in psc.get("sysctls") or ():
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            out.append(f"unsafe sysctl {sysctl.get('name')}")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod seccomp {pod_seccomp}")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    pod_selinux = psc.get("seLinuxOptions") or {}
    if pod_selinux.get("user") or pod_selinux.get("role"):
        out.append("pod seLinux user/role")
    pod_apparmor = (psc.get("appArmorProfile") or {}).get("type")
    if pod_apparmor not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod appArmor {pod_apparmor}")
    containers = list(_all_containers(pod))
    if not containers:
        out.append("no containers")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where} privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where} hostProcess")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{where} procMount")
        for port in c.get("ports") or ():
            if port.get("hostPort"):
                out.append(f"{where} hostPort")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where} allowPrivilegeEscalation not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            out.append(f"{where} does not drop ALL capabilities")
        if set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}:
            out.append(f"{where} adds capabilities {caps.get('add')}")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and psc.get("runAsNonRoot") is not True):
            out.append(f"{where} may run as root")
        if sc.get("runAsUser") == 0:
            out.append(f"{where} runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is None and pod_seccomp is None:
            out.append(f"{where} has no seccomp profile")
        if seccomp not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{where} seccomp {seccomp}")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("user") or selinux.get("role"):
            out.append(f"{where} seLinux user/role")
    return out


def pod_specs(objects: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The pod specs inside built objects (Deployments)."""
    return [o["spec"]["template"]["spec"] for o in objects if o and o["kind"] == "Deployment"]


def secure_pod() -> dict[str, Any]:
    """A pod spec that passes the restricted profile, for the checker's own tests."""
    return {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "c",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }


def test_restricted_checker_accepts_a_compliant_pod() -> None:
    assert restricted_violations(secure_pod()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p.update(hostNetwork=True), "hostNetwork set"),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "volume h"),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "may run as root"),
        (lambda p: p["securityContext"].update(runAsUser=0), "pod runAsUser 0"),
        (lambda p: p["securityContext"].pop("seccompProfile"), "no seccomp profile"),
        (lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "pod seccomp"),
        (lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"), "allowPrivilege"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (lambda p: p["containers"][0]["securityContext"].update(capabilities={"drop": []}), "drop ALL"),
        (
            lambda p: p["containers"][0]["securityContext"].update(
                capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}
            ),
            "adds capabilities",
        ),
        (lambda p: p["containers"][0]["securityContext"].update(runAsNonRoot=False), "may run as root"),
        (lambda p: p["containers"][0].update(ports=[{"containerPort": 1, "hostPort": 1}]), "hostPort"),
    ],
)
def test_restricted_checker_finds_violations(mutate: Any, expected: str) -> None:
    pod = secure_pod()
    mutate(pod)
    assert any(expected in v for v in restricted_violations(pod)), restricted_violations(pod)


# --- labels and selectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "instance", "component"),
    [("ojs-server", "c1", "server"), ("redis", "c1", "backend"), ("ojs-worker", "c1", "worker")],
)
def test_labels_and_selectors(app: str, instance: str, component: str) -> None:
    sel = selector_labels(app, instance, component)
    assert sel == {
        "app.kubernetes.io/name": app,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
    }
    labels = standard_labels(app, instance, component, extra={"app.kubernetes.io/name": "evil", "x": "y"})
    assert labels == {
        **sel,
        "app.kubernetes.io/part-of": "ojs",
        "app.kubernetes.io/managed-by": "ojsctrl",
        "x": "y",
    }


def test_selector_string_is_sorted() -> None:
    assert selector_string({"b": "2", "a": "1", "c": "3"}) == "a=1,b=2,c=3"


# --- owner references and metadata -------------------------------------------------------------------------


def test_owner_reference_from_dict_and_model() -> None:
    cluster = make_cluster({"backend": {"type": "lite"}})
    want = {
        "apiVersion": "ojs.openjobspec.dev/v1alpha1",
        "kind": "OJSCluster",
        "name": "c1",
        "uid": "uid-cluster-c1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert owner_reference(cluster) == want
    assert owner_reference(cluster.to_dict()) == want


@pytest.mark.parametrize("drop", ["uid", "name"])
def test_owner_reference_needs_identity(drop: str) -> None:
    obj = make_cluster({"backend": {"type": "lite"}}).to_dict()
    del obj["metadata"][drop]
    with pytest.raises(ValueError, match=drop):
        owner_reference(obj)


def test_object_meta_requires_a_namespace() -> None:
    obj = make_cluster({"backend": {"type": "lite"}}).to_dict()
    del obj["metadata"]["namespace"]
    with pytest.raises(ValueError, match="namespace"):
        namespace_of(obj)
    meta = object_meta(make_cluster({"backend": {"type": "lite"}}), "x", {"a": "b"}, {"k": "v"})
    assert meta["namespace"] == NS
    assert meta["annotations"] == {"k": "v"}
    assert meta["ownerReferences"][0]["controller"] is True


# --- config hash --------------------------------------------------------------------------------------------


def test_config_hash_is_stable_and_order_insensitive_for_keys() -> None:
    a = config_hash({"x": 1, "y": [1, 2]}, b"secret")
    assert a == config_hash({"y": [1, 2], "x": 1}, b"secret")
    assert a == config_hash({"y": [1, 2], "x": 1}, "secret")  # bytes and str values are the same value
    assert len(a) == 64
    assert int(a, 16) >= 0


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (({"x": 1}, b"secret-1"), ({"x": 1}, b"secret-2")),
        (({"x": 1}, b"s"), ({"x": 2}, b"s")),
        ((b"a", b"b"), (b"b", b"a")),  # the parts' order matters
        ((b"\xff\xfe",), (b"\xff\xfd",)),  # binary Secret data
        (({"x": None},), ({"x": 0},)),
    ],
)
def test_config_hash_changes_with_any_input(left: tuple[Any, ...], right: tuple[Any, ...]) -> None:
    assert config_hash(*left) != config_hash(*right)


def test_config_hash_does_not_reveal_secret_values() -> None:
    secret = "s3cr3t-PASSWORD-value"
    digest = config_hash({"spec": 1}, secret.encode())
    for form in (secret, base64.b64encode(secret.encode()).decode(), secret.encode().hex()):
        assert form not in digest
    assert digest != hashlib.sha256(secret.encode()).hexdigest()


def test_config_hash_accepts_models_and_rejects_unknown_types() -> None:
    cluster = make_cluster({"backend": {"type": "lite"}})
    assert config_hash(cluster.spec) == config_hash(cluster.spec.to_dict())
    with pytest.raises(TypeError):
        config_hash(object())


# --- security contexts --------------------------------------------------------------------------------------

_DEFAULT_POD_SC = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "fsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, _DEFAULT_POD_SC),
        ({}, _DEFAULT_POD_SC),
        ({"runAsUser": 1000}, {**_DEFAULT_POD_SC, "runAsUser": 1000}),
        ({"runAsGroup": 2000, "fsGroup": 3000}, {**_DEFAULT_POD_SC, "runAsGroup": 2000, "fsGroup": 3000}),
        ({"runAsNonRoot": True}, _DEFAULT_POD_SC),
        # The restricted profile wins over a user asking for root.
        ({"runAsNonRoot": False}, _DEFAULT_POD_SC),
        ({"runAsUser": 0}, _DEFAULT_POD_SC),
        ({"runAsUser": -1, "fsGroup": "x"}, _DEFAULT_POD_SC),
        ({"readOnlyRootFilesystem": False}, _DEFAULT_POD_SC),
    ],
)
def test_pod_security_context_merge(user: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert pod_security_context(user) == expected


@pytest.mark.parametrize(
    ("user", "read_only"),
    [(None, True), ({}, True), ({"readOnlyRootFilesystem": False}, False), ({"runAsUser": 5}, True)],
)
def test_container_security_context(user: dict[str, Any] | None, read_only: bool) -> None:
    assert container_security_context(user) == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": read_only,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# --- env merge ----------------------------------------------------------------------------------------------

_OP = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, ["A=1", "B=2", "C=3"]),
        ([], ["A=1", "B=2", "C=3"]),
        ([{"name": "D", "value": "4"}], ["A=1", "B=2", "C=3", "D=4"]),
        ([{"name": "B", "value": "x"}], ["A=1", "C=3", "B=x"]),
        ([{"name": "D", "value": "$(A)"}, {"name": "A", "value": "y"}], ["B=2", "C=3", "D=$(A)", "A=y"]),
        ([{"name": "D", "value": "1"}, {"name": "D", "value": "2"}], ["A=1", "B=2", "C=3", "D=2"]),
        (
            [{"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            ["A=1", "B=2", "C=<from>"],
        ),
    ],
)
def test_merge_env(user: list[dict[str, Any]] | None, expected: list[str]) -> None:
    merged = merge_env(_OP, user)
    assert [f"{e['name']}={e.get('value', '<from>')}" for e in merged] == expected
    names = [e["name"] for e in merged]
    assert len(names) == len(set(names))


def test_merge_env_does_not_alias_the_inputs() -> None:
    user = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    merged = merge_env(_OP, user)
    merged[-1]["valueFrom"]["secretKeyRef"]["name"] = "changed"
    assert user[0]["valueFrom"]["secretKeyRef"]["name"] == "s"


# --- pod settings -------------------------------------------------------------------------------------------

_SEL = {"app.kubernetes.io/name": "n", "app.kubernetes.io/instance": "i", "app.kubernetes.io/component": "c"}


@pytest.mark.parametrize(
    ("settings", "spread", "expected"),
    [
        ({}, False, {"automountServiceAccountToken": False}),
        ({"serviceAccountName": "sa"}, False, {"serviceAccountName": "sa"}),
        (
            {
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "priorityClassName": "high",
                "imagePullSecrets": [{"name": "r"}, {"name": "r"}],
            },
            False,
            {
                "automountServiceAccountToken": False,
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "priorityClassName": "high",
                "imagePullSecrets": [{"name": "r"}],
            },
        ),
        (
            {},
            True,
            {
                "automountServiceAccountToken": False,
                "topologySpreadConstraints": default_spreading(_SEL)[0],
                "affinity": default_spreading(_SEL)[1],
            },
        ),
        (
            {"affinity": {"nodeAffinity": {"x": 1}}},
            True,
            {
                "automountServiceAccountToken": False,
                "topologySpreadConstraints": default_spreading(_SEL)[0],
                "affinity": {"nodeAffinity": {"x": 1}},
            },
        ),
        (
            {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "k", "whenUnsatisfiable": "X"}]},
            True,
            {
                "automountServiceAccountToken": False,
                "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "k", "whenUnsatisfiable": "X"}],
                "affinity": default_spreading(_SEL)[1],
            },
        ),
    ],
)
def test_pod_scheduling(settings: dict[str, Any], spread: bool, expected: dict[str, Any]) -> None:
    got = pod_scheduling(PodSettings.from_dict(settings), spread_selector=_SEL if spread else None)
    assert got == expected


def test_default_spreading_is_soft() -> None:
    spread, affinity = default_spreading(_SEL)
    assert spread == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": _SEL},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]
    term = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity["podAntiAffinity"]


def test_pod_template_metadata_operator_wins() -> None:
    settings = PodSettings.from_dict(
        {
            "podLabels": {"team": "a", "app.kubernetes.io/name": "evil", "app.kubernetes.io/part-of": "x"},
            "podAnnotations": {"note": "hi", CONFIG_HASH_ANNOTATION: "forged"},
        }
    )
    labels = standard_labels("ojs-server", "c1", "server")
    meta = pod_template_metadata(settings, labels, {CONFIG_HASH_ANNOTATION: "real"})
    assert meta["labels"] == {**labels, "team": "a"}
    assert meta["annotations"] == {"note": "hi", CONFIG_HASH_ANNOTATION: "real"}
