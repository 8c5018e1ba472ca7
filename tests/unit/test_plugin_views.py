"""What kubectl ojs shows, from objects shaped as the operator writes them."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest

from ojsctrl.plugin import text, views
from ojsctrl.plugin.cli import build_parser
from ojsctrl.plugin.pause import (
    PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION,
    pause_patch,
    pause_state,
    resume_patch,
)

NOW = dt.datetime(2026, 12, 5, 12, 0, 0, tzinfo=dt.UTC)


def cond(ctype: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-05T11:00:00Z",
    }


def cluster(name: str = "jobs", ns: str = "apps", **status: Any) -> dict[str, Any]:
    return {
        "kind": "OJSCluster",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"backend": {"type": "redis", "embedded": True}, "replicas": 2},
        "status": {
            "phase": "Running",
            "replicas": 2,
            "readyReplicas": 2,
            "endpoint": f"http://{name}-server.{ns}.svc.cluster.local:8080",
            "image": "ghcr.io/openjobspec/ojs-backend-redis:v0.5.0",
            "queueDepth": 52,
            "activeJobs": 4,
            "queues": [
                {"name": "low", "available": 2, "active": 0},
                {"name": "emails", "available": 40, "active": 3},
                {"name": "data", "available": 10, "active": 1},
            ],
            "conditions": [
                cond("Ready", "True", "Running"),
                cond("Progressing", "True", "RolloutInProgress"),
                cond("Degraded", "False", "AsExpected"),
                cond("MonitoringReady", "False", "NotRequested"),
            ],
            **status,
        },
    }


def worker(name: str = "email", ns: str = "apps", ref: str = "jobs", **spec: Any) -> dict[str, Any]:
    return {
        "kind": "OJSWorker",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterRef": ref, "jobTypes": ["x"], "queues": ["emails"], "image": "w:1", **spec},
        "status": {
            "phase": "Running",
            "replicas": 9,
            "readyReplicas": 8,
            "desiredReplicas": 9,
            "queueDepth": 40,
            "activeJobs": 3,
            "lastScaleTime": "2026-12-05T11:55:00Z",
            "conditions": [
                cond("Ready", "True", "Running"),
                cond("Autoscaling", "True", "ScaledUp", "43 jobs / 5 per worker"),
            ],
        },
    }


AUTOSCALED = {"autoScaling": {"enabled": True, "targetJobsPerWorker": 5, "maxReplicas": 10}}


def test_unhealthy_conditions_only() -> None:
    conds = [
        cond("Ready", "True", "Running"),
        cond("Degraded", "True", "NameConflict", "Service x exists"),
        cond("Degraded", "False", "AsExpected"),
        cond("Progressing", "False", "RolloutComplete"),
        cond("QueueStatsAvailable", "False", "Unreachable", "connection refused"),
        cond("Autoscaling", "False", "Disabled"),
        cond("WorkersMatched", "Unknown", "NotChecked"),
        cond("BackendReady", "Unknown", "Checking"),
    ]
    assert [(c["type"], c["reason"]) for c in views.unhealthy(conds)] == [
        ("Degraded", "NameConflict"),
        ("QueueStatsAvailable", "Unreachable"),
        ("BackendReady", "Checking"),
    ]


def test_status_view_groups_workers_and_picks_busiest_queues() -> None:
    ev = [
        {
            "metadata": {"namespace": "apps"},
            "type": "Warning",
            "reason": "ClusterNotFound",
            "message": "no",
            "involvedObject": {"kind": "OJSWorker", "name": "stray"},
            "lastTimestamp": "2026-12-05T11:59:00Z",
        },
        {
            "metadata": {"namespace": "apps"},
            "type": "Warning",
            "reason": "BackOff",
            "message": "pull",
            "involvedObject": {"kind": "Pod", "name": "jobs-server-abc-123"},
            "lastTimestamp": "2026-12-05T11:58:00Z",
            "count": 4,
        },
        {
            "metadata": {"namespace": "apps"},
            "type": "Warning",
            "reason": "Unrelated",
            "message": "x",
            "involvedObject": {"kind": "Pod", "name": "other-1"},
            "lastTimestamp": "2026-12-05T11:59:30Z",
        },
        {
            "metadata": {"namespace": "apps"},
            "type": "Normal",
            "reason": "Scaled",
            "message": "x",
            "involvedObject": {"kind": "OJSWorker", "name": "email"},
        },
    ]
    view = views.status_view(
        [cluster()], [worker(**AUTOSCALED), worker("stray", ref="gone")], ev, {"apps/jobs-api-key": True}, NOW
    )
    (c,) = view["clusters"]
    assert [q["name"] for q in c["busiestQueues"]] == ["emails", "data", "low"]
    assert c["unhealthyConditions"] == []
    assert c["auth"] == {
        "disabled": False,
        "secret": "jobs-api-key",
        "key": "api-key",
        "generated": True,
        "secretExists": True,
    }
    (w,) = c["workers"]
    assert (w["name"], w["mode"], w["reason"], w["lastScaleAge"]) == (
        "email",
        "queueDepth",
        "ScaledUp",
        "5m",
    )
    assert [o["name"] for o in view["workersWithoutCluster"]] == ["stray"]
    assert [(e["reason"], e["count"]) for e in view["warningEvents"]] == [
        ("BackOff", 4),
        ("ClusterNotFound", 1),
    ]
    json.dumps(view)  # -o json prints it as it is


def test_status_reads_the_future_autoscaling_block() -> None:
    w = worker(**AUTOSCALED)
    w["status"]["autoscaling"] = {
        "metric": "waitTime",
        "reason": "BacklogGrowing",
        "message": "wait 40s > 30s",
    }
    v = views.worker_view(w, NOW)
    assert (v["reason"], v["message"]) == ("BacklogGrowing", "wait 40s > 30s")


def test_auth_facts() -> None:
    c = cluster()
    c["spec"]["auth"] = {"apiKeySecretRef": {"name": "mine", "key": "k"}}
    assert views.auth_view(c, {}) == {
        "disabled": False,
        "secret": "mine",
        "key": "k",
        "generated": False,
        "secretExists": False,
    }
    c["spec"]["auth"] = {"disabled": True}
    assert views.auth_view(c, None) == {"disabled": True}


def test_backend_names_secret_not_url() -> None:
    spec = {"backend": {"type": "postgres", "urlSecretRef": {"name": "pg", "key": "url"}}}
    assert views.backend_view(spec) == {
        "type": "postgres",
        "source": "urlSecretRef",
        "secret": {"name": "pg", "key": "url"},
    }
    assert views.backend_view({"backend": {"type": "postgres", "url": "postgres://u:p@h/d"}}) == {
        "type": "postgres",
        "source": "url",
    }


def test_text_rendering_plain_and_coloured() -> None:
    c = cluster()
    c["status"]["conditions"].append(cond("QueueStatsAvailable", "False", "Unreachable", "refused"))
    view = views.status_view([c], [worker(**AUTOSCALED)], [], {"apps/jobs-api-key": True}, NOW)
    plain = text.render_status(view, text.Painter(False))
    assert "\033[" not in plain
    assert "OJSCluster apps/jobs: Running" in plain
    assert "Secret jobs-api-key, key api-key (generated by the operator; Secret present)" in plain
    assert "! QueueStatsAvailable=False (Unreachable): refused" in plain
    rows = [line.split() for line in plain.splitlines()]
    assert ["emails", "40", "3"] in rows
    assert ["email", "Running", "8/9", "9", "queueDepth", "5m", "ago", "off"] in rows
    assert "autoscaler: ScaledUp: 43 jobs / 5 per worker" in plain
    coloured = text.render_status(view, text.Painter(True))
    assert "\033[32mRunning\033[0m" in coloured


def test_colour_only_on_a_tty_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert text.use_colour(Tty())
    assert not text.use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "")
    assert not text.use_colour(Tty())


def test_explain_queue_depth_in_words() -> None:
    v = views.explain_scaling(worker(**AUTOSCALED), cluster(), None, NOW)
    words = " ".join(v["explanation"])
    assert "40 waiting + 3 active = 43 jobs" in words
    assert "ceil(43/5) = 9 pods, within 1..10: 9." in words
    assert "(spec.autoScaling.targetJobsPerWorker)" in words
    assert "Condition Autoscaling=True (ScaledUp): 43 jobs / 5 per worker" in words
    out = text.render_explain(v, text.Painter(False))
    assert "Target:   5 jobs per worker" in out


def test_explain_cluster_default_target_and_bounds() -> None:
    c = cluster()
    c["spec"]["autoScaling"] = {"targetJobsPerWorker": 20}
    w = worker(autoScaling={"enabled": True, "minReplicas": 3, "maxReplicas": 6})
    words = " ".join(views.explain_scaling(w, c, None, NOW)["explanation"])
    assert "ceil(43/20) = 3 pods" in words and "the cluster's autoScaling.targetJobsPerWorker" in words
    w["status"]["queueDepth"] = 500
    assert "within 3..6: 6." in " ".join(views.explain_scaling(w, c, None, NOW)["explanation"])


def test_explain_the_future_autoscaling_block() -> None:
    w = worker(autoScaling={"enabled": True, "metric": "waitTime"})
    w["status"]["autoscaling"] = {
        "metric": "waitTime",
        "recommendation": 7,
        "desiredReplicas": 6,
        "reason": "MaxReplicas",
        "message": "capped",
        "inputs": {"arrivalRate": 2.5, "estimatedWait": "40s", "depth": 40},
    }
    words = v_words = views.explain_scaling(w, None, None, NOW)["explanation"]
    joined = " ".join(v_words)
    assert "Metric waitTime: the autoscaler recommends 7 and decided 6 replicas" in joined
    assert "Reason MaxReplicas: capped" in joined
    assert "Inputs: arrivalRate 2.5, depth 40, estimatedWait 40s." in words


def test_explain_manual_and_paused() -> None:
    w = worker()
    w["status"]["desiredReplicas"] = 3
    assert views.explain_scaling(w, None, None, NOW)["explanation"][0].startswith(
        "Autoscaling is off: the workers run spec.replicas (3)"
    )
    w = worker(**AUTOSCALED)
    w["metadata"]["annotations"] = {
        PAUSED_ANNOTATION: "2026-12-05T13:00:00Z",
        PAUSED_REPLICAS_ANNOTATION: "2",
    }
    first = views.explain_scaling(w, None, None, NOW)["explanation"][0]
    assert first == (
        "Autoscaling is paused until 2026-12-05T13:00:00Z holding 2 replicas "
        "(kubectl ojs resume email ends it)."
    )


def test_pause_patches_touch_only_the_annotations() -> None:
    assert pause_patch() == {
        "metadata": {"annotations": {PAUSED_ANNOTATION: "true", PAUSED_REPLICAS_ANNOTATION: None}}
    }
    p = pause_patch(duration="1h30m", replicas=0, now=NOW)
    assert p["metadata"]["annotations"] == {
        PAUSED_ANNOTATION: "2026-12-05T13:30:00Z",
        PAUSED_REPLICAS_ANNOTATION: "0",
    }
    p = pause_patch(until="2026-12-06T01:00:00+02:00")
    assert p["metadata"]["annotations"][PAUSED_ANNOTATION] == "2026-12-05T23:00:00Z"
    assert resume_patch() == {
        "metadata": {"annotations": {PAUSED_ANNOTATION: None, PAUSED_REPLICAS_ANNOTATION: None}}
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": "tomorrow"}, "--until: not an RFC 3339 time"),
        ({"until": "2026-12-05T10:00:00"}, "--until: not an RFC 3339 time with a zone"),
        ({"duration": "soon"}, "--for:"),
        ({"duration": "0s"}, "--for must be positive"),
        ({"replicas": -1}, "--replicas must be 0 or more"),
    ],
)
def test_pause_bad_input_names_the_flag(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pause_patch(**kwargs)


def test_pause_state() -> None:
    assert pause_state({}, NOW) is None
    assert pause_state({PAUSED_ANNOTATION: "true"}, NOW) == {
        "annotation": "true",
        "until": None,
        "expired": False,
        "replicas": None,
    }
    assert pause_state({PAUSED_ANNOTATION: "2026-12-05T11:00:00Z"}, NOW)["expired"] is True  # type: ignore[index]
    assert "invalid" in (pause_state({PAUSED_ANNOTATION: "later"}, NOW) or {})


def test_flags_before_or_after_the_command() -> None:
    parser = build_parser()
    a = parser.parse_args(["-n", "x", "--context", "c", "status", "-A", "-o", "json"])
    assert (a.namespace, a.context, a.all_namespaces, a.output) == ("x", "c", True, "json")
    b = parser.parse_args(["status", "-n", "y", "--kubeconfig", "/k"])
    assert (b.namespace, b.kubeconfig, b.output) == ("y", "/k", "text")
    r = parser.parse_args(["report", "-o", "out.tgz"])
    assert r.file == "out.tgz"
    with pytest.raises(SystemExit):
        parser.parse_args(["pause", "w", "--until", "2026-12-05T10:00:00Z", "--for", "1h"])
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "-o", "wide"])


def ca_pem(not_after: dt.datetime) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_operator_view_and_webhook_ca_validity() -> None:
    import base64

    bundle = base64.b64encode(
        ca_pem(NOW + dt.timedelta(days=10)) + ca_pem(NOW + dt.timedelta(days=200))
    ).decode()
    dep = {
        "metadata": {
            "name": "ojs-operator-controller-manager",
            "namespace": "ojs-system",
            "labels": {"app.kubernetes.io/version": "v0.1.0"},
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "ghcr.io/x/op:v0.1.0"}]}}},
        "status": {"readyReplicas": 1},
    }
    hooks = [
        {
            "metadata": {"name": "ojs-vwc"},
            "webhooks": [{"name": "vojscluster.ojs.openjobspec.dev", "clientConfig": {"caBundle": bundle}}],
        },
        {"metadata": {"name": "someone-else"}, "webhooks": [{"name": "v.example.com"}]},
    ]
    op = views.operator_view([dep], hooks, NOW)
    assert op["deployments"] == [
        {
            "namespace": "ojs-system",
            "name": "ojs-operator-controller-manager",
            "image": "ghcr.io/x/op:v0.1.0",
            "version": "v0.1.0",
            "replicas": 2,
            "readyReplicas": 1,
        }
    ]
    assert op["webhooks"] == [{"name": "ojs-vwc", "caValidUntil": "2027-06-23T12:00:00Z", "caDaysLeft": 200}]
    out = text.render_status(views.status_view([], [], [], {}, NOW, op), text.Painter(False))
    assert "Operator: ojs-system/ojs-operator-controller-manager 1/2 ready, image ghcr.io/x/op:v0.1.0" in out
    assert "Webhook ojs-vwc: CA valid until 2027-06-23T12:00:00Z (200 days)" in out
    unreadable = views.operator_view(None, None, NOW)
    assert "cannot be listed" in text.render_status(
        views.status_view([], [], [], {}, NOW, unreadable), text.Painter(False)
    )


def test_explain_queue_depth_with_its_status_block_keeps_the_arithmetic() -> None:
    w = worker(autoScaling={"enabled": True, "minReplicas": 1, "maxReplicas": 10})
    w["status"]["autoscaling"] = {
        "metric": "queueDepth",
        "recommendation": 9,
        "desiredReplicas": 9,
        "reason": "Stable",
        "message": "load 43, target 5 per worker: recommend 9; at target",
        "inputs": {"depth": 40, "active": 3},
    }
    joined = " ".join(views.explain_scaling(w, None, None, NOW)["explanation"])
    assert "hold 40 waiting + 3 active = 43 jobs" in joined
    assert "Reason Stable: load 43, target 5 per worker" in joined
    assert "Metric queueDepth" not in joined
