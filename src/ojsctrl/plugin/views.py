"""What each command shows, as plain data built from the objects the operator writes (pure functions).

``-o json|yaml`` prints these dicts as they are; :mod:`ojsctrl.plugin.text` renders them for people. The
readers are lax: an object the API server accepted is shown even when a field is missing or new.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ojsctrl.plugin.pause import pause_state

JSON = dict[str, Any]

# Conditions whose True means trouble; for the others False (or Unknown) does, unless the reason is one
# of the resting states below. Progressing is news, not health (a failed rollout shows in Degraded).
NEGATIVE = frozenset({"Degraded"})
INFORMATIONAL = frozenset({"Progressing"})
RESTING_REASONS = frozenset({"Disabled", "NotRequested", "WaitingForStats", "NotChecked"})
BUSIEST_QUEUES = 5
WARNING_EVENTS = 10
DEFAULT_TARGET_JOBS_PER_WORKER = 10


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def parse_time(value: str | None) -> dt.datetime | None:
    """A Kubernetes timestamp (RFC 3339), or None when absent or malformed."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError:
        return None


def age(value: str | None, now: dt.datetime) -> str | None:
    """How long ago, kubectl style (45s, 12m, 3h, 2d); None when unknown."""
    t = parse_time(value)
    if t is None:
        return None
    secs = max(0, int((now - t).total_seconds()))
    if secs < 120:
        return f"{secs}s"
    if secs < 2 * 3600:
        return f"{secs // 60}m"
    if secs < 2 * 86400:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def unhealthy(conditions: Iterable[Mapping[str, Any]] | None) -> list[JSON]:
    """The conditions that say something is wrong, with their messages."""
    out = []
    for c in conditions or ():
        ctype, status, reason = str(c.get("type")), c.get("status"), str(c.get("reason") or "")
        if ctype in INFORMATIONAL:
            continue
        bad = status == "True" if ctype in NEGATIVE else status != "True" and reason not in RESTING_REASONS
        if bad:
            out.append(
                {"type": ctype, "status": status, "reason": reason, "message": str(c.get("message") or "")}
            )
    return out


def find_condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    """The condition of that type in the object's status, if any."""
    return next((c for c in _status(obj).get("conditions") or () if c.get("type") == ctype), None)


def busiest(queues: Iterable[Mapping[str, Any]] | None, n: int = BUSIEST_QUEUES) -> list[JSON]:
    """The n queues with the most jobs (waiting + active), busiest first."""
    rows = [
        (int(q.get("available") or 0), int(q.get("active") or 0), str(q.get("name"))) for q in queues or ()
    ]
    rows.sort(key=lambda r: (-(r[0] + r[1]), -r[0], r[2]))
    return [{"name": name, "depth": depth, "active": active} for depth, active, name in rows[:n]]


def backend_view(spec: Mapping[str, Any]) -> JSON:
    """The backend's type and where its connection comes from (Secret names only)."""
    backend = spec.get("backend") or {}
    btype = str(backend.get("type") or "?")
    out: JSON = {"type": btype}
    if btype == "lite":
        out["source"] = "in-process"
    elif btype == "sqs":
        out["source"] = f"region {(backend.get('sqs') or {}).get('region', '?')}"
    elif backend.get("embedded"):
        out["source"] = "embedded"
    elif backend.get("urlSecretRef"):
        ref = backend["urlSecretRef"]
        out["source"] = "urlSecretRef"
        out["secret"] = {"name": ref.get("name"), "key": ref.get("key")}
    elif backend.get("url"):
        out["source"] = "url"
    store = backend.get("stateStore")
    if store:
        out["stateStore"] = (
            "embedded"
            if store.get("embedded")
            else ("urlSecretRef" if store.get("urlSecretRef") else "url" if store.get("url") else "?")
        )
    return out


def auth_view(cluster: Mapping[str, Any], secrets: Mapping[str, bool] | None) -> JSON:
    """Where the API key lives (the Secret and key, never its value) and whether that Secret exists.

    ``secrets`` maps ``namespace/name`` to existence; None when it could not be checked."""
    meta, auth = _meta(cluster), _spec(cluster).get("auth") or {}
    if auth.get("disabled"):
        return {"disabled": True}
    ref = auth.get("apiKeySecretRef") or {}
    generated = not ref
    name = f"{meta.get('name')}-api-key" if generated else ref.get("name")
    key = "api-key" if generated else ref.get("key")
    out: JSON = {"disabled": False, "secret": name, "key": key, "generated": generated}
    if secrets is not None:
        out["secretExists"] = bool(secrets.get(f"{meta.get('namespace')}/{name}"))
    return out


def worker_mode(spec: Mapping[str, Any]) -> str:
    """``queueDepth``/``waitTime``/``cpu`` when autoscaling is on, else ``manual``."""
    a = spec.get("autoScaling") or {}
    return str(a.get("metric") or "queueDepth") if a.get("enabled") else "manual"


def worker_view(worker: Mapping[str, Any], now: dt.datetime) -> JSON:
    """One worker: replicas, mode, what the autoscaler says, last scale, drain and pause state."""
    meta, spec, status = _meta(worker), _spec(worker), _status(worker)
    auto = status.get("autoscaling") or {}
    cond = find_condition(worker, "Autoscaling") or {}
    matched = find_condition(worker, "WorkersMatched")
    drain_on = bool((spec.get("gracefulShutdown") or {}).get("drainBeforeShutdown"))
    out: JSON = {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "cluster": spec.get("clusterRef"),
        "phase": status.get("phase"),
        "replicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "desiredReplicas": status.get("desiredReplicas"),
        "mode": worker_mode(spec),
        "queues": list(spec.get("queues") or ["default"]),
        "queueDepth": status.get("queueDepth"),
        "activeJobs": status.get("activeJobs"),
        # status.autoscaling (issue 13) when the operator writes it, else the Autoscaling condition.
        "reason": auto.get("reason") or cond.get("reason"),
        "message": auto.get("message") or cond.get("message"),
        "lastScaleTime": status.get("lastScaleTime"),
        "lastScaleAge": age(status.get("lastScaleTime"), now),
        "drain": {
            "enabled": drain_on,
            "draining": status.get("phase") == "Draining",
            "workersMatched": None
            if matched is None
            else {"status": matched.get("status"), "message": matched.get("message")},
        },
        "pause": pause_state(meta.get("annotations"), now),
        "unhealthyConditions": unhealthy(status.get("conditions")),
    }
    return out


def cluster_view(
    cluster: Mapping[str, Any],
    workers: Iterable[Mapping[str, Any]],
    secrets: Mapping[str, bool] | None,
    now: dt.datetime,
) -> JSON:
    """One cluster and its workers."""
    meta, spec, status = _meta(cluster), _spec(cluster), _status(cluster)
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "phase": status.get("phase"),
        "backend": backend_view(spec),
        "image": status.get("image") or spec.get("image"),
        "servers": {"replicas": status.get("replicas"), "ready": status.get("readyReplicas")},
        "endpoint": status.get("endpoint"),
        "queueDepth": status.get("queueDepth"),
        "activeJobs": status.get("activeJobs"),
        "busiestQueues": busiest(status.get("queues")),
        "auth": auth_view(cluster, secrets),
        "grpc": bool((spec.get("grpc") or {}).get("enabled")),
        "unhealthyConditions": unhealthy(status.get("conditions")),
        "workers": [worker_view(w, now) for w in sorted(workers, key=lambda w: str(_meta(w).get("name")))],
    }


def event_view(event: Mapping[str, Any], now: dt.datetime) -> JSON:
    """One Event, as kubectl get events shows it."""
    inv = event.get("involvedObject") or event.get("regarding") or {}
    when = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("series") or {}).get("lastObservedTime")
        or _meta(event).get("creationTimestamp")
    )
    return {
        "namespace": _meta(event).get("namespace"),
        "object": f"{inv.get('kind')}/{inv.get('name')}",
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": str(event.get("message") or event.get("note") or "").strip(),
        "count": int(event.get("count") or (event.get("series") or {}).get("count") or 1),
        "lastSeen": when,
        "age": age(when, now),
    }


def related_warnings(
    events: Iterable[Mapping[str, Any]],
    names: set[tuple[str, str]],
    now: dt.datetime,
    n: int = WARNING_EVENTS,
) -> list[JSON]:
    """The n most recent Warning events about the shown objects and their children (oldest first).

    ``names`` holds (namespace, name) of the shown clusters and workers; a child's name starts with its
    owner's (``<cluster>-server``, ``<worker>-worker-...``), so a prefix match takes them in."""
    picked = []
    for e in events:
        if e.get("type") != "Warning":
            continue
        inv = e.get("involvedObject") or e.get("regarding") or {}
        ns, name = str(_meta(e).get("namespace") or inv.get("namespace")), str(inv.get("name") or "")
        if any(ns == ons and (name == oname or name.startswith(oname + "-")) for ons, oname in names):
            picked.append(event_view(e, now))
    picked.sort(key=lambda v: str(v["lastSeen"] or ""))
    return picked[-n:]


def status_view(
    clusters: Iterable[Mapping[str, Any]],
    workers: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    secrets: Mapping[str, bool] | None,
    now: dt.datetime,
    operator: JSON | None = None,
) -> JSON:
    """``kubectl ojs status``: the operator (when given), the clusters with their workers, workers whose
    cluster is not shown, and the recent Warning events about them."""
    clusters = sorted(clusters, key=lambda c: (str(_meta(c).get("namespace")), str(_meta(c).get("name"))))
    workers = list(workers)
    by_cluster: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for w in workers:
        key = (str(_meta(w).get("namespace")), str(_spec(w).get("clusterRef")))
        by_cluster.setdefault(key, []).append(w)
    shown = {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))) for c in clusters}
    out_clusters = [
        cluster_view(c, by_cluster.get(k, []), secrets, now)
        for c, k in zip(clusters, shown_keys(clusters), strict=True)
    ]
    orphans = [
        worker_view(w, now)
        for w in sorted(workers, key=lambda w: (str(_meta(w).get("namespace")), str(_meta(w).get("name"))))
        if (str(_meta(w).get("namespace")), str(_spec(w).get("clusterRef"))) not in shown
    ]
    names = shown | {(str(_meta(w).get("namespace")), str(_meta(w).get("name"))) for w in workers}
    return {
        "operator": operator,
        "clusters": out_clusters,
        "workersWithoutCluster": orphans,
        "warningEvents": related_warnings(events, names, now),
    }


def shown_keys(clusters: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(namespace, name) of each cluster, in order."""
    return [(str(_meta(c).get("namespace")), str(_meta(c).get("name"))) for c in clusters]


# --------------------------------------------------------------------------- explain-scaling
def _fmt_num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def explain_scaling(
    worker: Mapping[str, Any],
    cluster: Mapping[str, Any] | None,
    hpa: Mapping[str, Any] | None,
    now: dt.datetime,
) -> JSON:
    """``kubectl ojs explain-scaling``: the autoscaler's inputs and decision, and the same in words.

    Reads ``status.autoscaling`` (metric, recommendation, desiredReplicas, reason, message, inputs) when
    the operator writes it; otherwise the queue counts, desiredReplicas and the Autoscaling condition."""
    meta, spec, status = _meta(worker), _spec(worker), _status(worker)
    a = spec.get("autoScaling") or {}
    mode = worker_mode(spec)
    cluster_target = ((_spec(cluster).get("autoScaling") or {}) if cluster else {}).get("targetJobsPerWorker")
    target = a.get("targetJobsPerWorker") or cluster_target or DEFAULT_TARGET_JOBS_PER_WORKER
    target_from = (
        "spec.autoScaling.targetJobsPerWorker"
        if a.get("targetJobsPerWorker")
        else ("the cluster's autoScaling.targetJobsPerWorker" if cluster_target else "the default")
    )
    depth, active = status.get("queueDepth"), status.get("activeJobs")
    auto = status.get("autoscaling") or None
    cond = find_condition(worker, "Autoscaling")
    pause = pause_state(meta.get("annotations"), now)
    lo, hi = int(a.get("minReplicas", 1)), int(a.get("maxReplicas", 10))
    view: JSON = {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "cluster": spec.get("clusterRef"),
        "mode": mode,
        "queues": list(spec.get("queues") or ["default"]),
        "minReplicas": lo,
        "maxReplicas": hi,
        "targetJobsPerWorker": target if mode == "queueDepth" else None,
        "scaleUpThreshold": int(a.get("scaleUpThreshold") or 0),
        "scaleDownDelay": a.get("scaleDownDelay") or "5m",
        "pollingInterval": a.get("pollingInterval") or "30s",
        "queueDepth": depth,
        "activeJobs": active,
        "replicas": status.get("replicas"),
        "readyReplicas": status.get("readyReplicas"),
        "desiredReplicas": status.get("desiredReplicas"),
        "lastScaleTime": status.get("lastScaleTime"),
        "condition": None
        if cond is None
        else {k: cond.get(k) for k in ("status", "reason", "message", "lastTransitionTime")},
        "autoscaling": auto,
        "pause": pause,
        "hpa": None,
    }
    if hpa is not None:
        hs = _status(hpa)
        view["hpa"] = {
            "name": _meta(hpa).get("name"),
            "currentReplicas": hs.get("currentReplicas"),
            "desiredReplicas": hs.get("desiredReplicas"),
            "currentMetrics": hs.get("currentMetrics") or [],
        }
    view["explanation"] = _explain_words(view, a, target_from)
    return view


def _explain_words(v: JSON, a: Mapping[str, Any], target_from: str) -> list[str]:
    words: list[str] = []
    name, mode = v["name"], v["mode"]
    if mode == "manual":
        words.append(
            f"Autoscaling is off: the workers run spec.replicas ({v['desiredReplicas']}); "
            f"{v['replicas']} pods exist, {v['readyReplicas']} ready."
        )
        return words
    pause = v.get("pause")
    if pause:
        if pause.get("invalid"):
            words.append(f"A pause annotation is malformed: {pause['invalid']}.")
        elif pause.get("expired"):
            words.append(f"The pause ended at {pause['until']}; the operator resumes autoscaling by itself.")
        else:
            held = f" holding {pause['replicas']} replicas" if pause.get("replicas") is not None else ""
            until = f" until {pause['until']}" if pause.get("until") else " until resumed"
            words.append(f"Autoscaling is paused{until}{held} (kubectl ojs resume {name} ends it).")
    if mode == "cpu":
        words.append("A HorizontalPodAutoscaler scales these workers on CPU utilisation, not the queues.")
        hpa = v.get("hpa")
        if hpa:
            words.append(
                f"HPA {hpa['name']}: {hpa['currentReplicas']} replicas now, {hpa['desiredReplicas']} wanted."
            )
        else:
            words.append("Its HPA was not found.")
    auto = v.get("autoscaling")
    queues = ", ".join(v["queues"])
    # queueDepth is explained by its arithmetic (clearer than the inputs), with the decision's reason.
    if auto and auto.get("metric", mode) != "queueDepth":
        words.append(
            f"Metric {auto.get('metric', mode)}: the autoscaler recommends "
            f"{auto.get('recommendation', '?')} and decided {auto.get('desiredReplicas', '?')} replicas "
            f"(bounds {v['minReplicas']}..{v['maxReplicas']})."
        )
        if auto.get("reason") or auto.get("message"):
            words.append(f"Reason {auto.get('reason', '?')}: {auto.get('message', '')}".rstrip(": "))
        inputs = auto.get("inputs") or {}
        if inputs:
            words.append(
                "Inputs: " + ", ".join(f"{k} {_fmt_num(val)}" for k, val in sorted(inputs.items())) + "."
            )
    elif mode == "queueDepth":
        depth, active = v["queueDepth"], v["activeJobs"]
        if depth is None or active is None:
            words.append(
                f"No queue counts in the status yet (queues {queues}): the operator holds the replicas."
            )
        else:
            load = int(depth) + int(active)
            raw = math.ceil(load / int(v["targetJobsPerWorker"]))
            bounded = min(max(raw, v["minReplicas"]), v["maxReplicas"])
            words.append(
                f"The queues {queues} hold {depth} waiting + {active} active = {load} jobs. At "
                f"{v['targetJobsPerWorker']} jobs per worker ({target_from}) that is ceil({load}/"
                f"{v['targetJobsPerWorker']}) = {raw} pods, within {v['minReplicas']}..{v['maxReplicas']}: "
                f"{bounded}."
            )
            if v["scaleUpThreshold"]:
                words.append(f"No scale-up while the depth is at or below {v['scaleUpThreshold']}.")
        if auto and (auto.get("reason") or auto.get("message")):
            words.append(f"Reason {auto.get('reason', '?')}: {auto.get('message', '')}".rstrip(": "))
    if mode != "cpu":
        words.append(
            f"Scale-down waits until the lower recommendation has held for {v['scaleDownDelay']}; "
            f"the queues are read every {v['pollingInterval']}."
        )
        words.append(
            f"Decided: {v['desiredReplicas']} replicas; the Deployment has {v['replicas']}, "
            f"{v['readyReplicas']} ready."
        )
    if v.get("lastScaleTime"):
        words.append(f"Last scaled at {v['lastScaleTime']}.")
    cond = v.get("condition")
    if cond:
        words.append(
            f"Condition Autoscaling={cond.get('status')} ({cond.get('reason')}): "
            f"{cond.get('message') or ''}".rstrip(": ")
        )
    return words


# --------------------------------------------------------------------------- the operator
def ca_bundle_expiry(bundle_b64: str | None) -> dt.datetime | None:
    """The latest notAfter of the CAs in a webhook's caBundle (the newest CA is what a rotation moves
    to); None when absent or unreadable. A caBundle is public: no Secret is read for it."""
    import base64
    import binascii

    from cryptography import x509

    if not bundle_b64:
        return None
    try:
        certs = x509.load_pem_x509_certificates(base64.b64decode(bundle_b64))
    except (ValueError, binascii.Error):
        return None
    return max((c.not_valid_after_utc for c in certs), default=None)


def operator_view(
    deployments: Iterable[Mapping[str, Any]] | None,
    webhooks: Iterable[Mapping[str, Any]] | None,
    now: dt.datetime,
) -> JSON:
    """The operator's Deployments (image, version label, ready replicas) and its admission webhook's CA
    validity. None in a field means it could not be read (RBAC)."""
    deps = None
    if deployments is not None:
        deps = []
        for d in deployments:
            meta, spec, status = _meta(d), _spec(d), _status(d)
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
            deps.append(
                {
                    "namespace": meta.get("namespace"),
                    "name": meta.get("name"),
                    "image": containers[0].get("image"),
                    "version": (meta.get("labels") or {}).get("app.kubernetes.io/version"),
                    "replicas": int(spec.get("replicas", 1)),
                    "readyReplicas": int(status.get("readyReplicas") or 0),
                }
            )
    hooks = None
    if webhooks is not None:
        hooks = []
        for h in webhooks:
            ours = [w for w in h.get("webhooks") or () if str(w.get("name", "")).endswith(".openjobspec.dev")]
            if not ours:
                continue
            expiry = ca_bundle_expiry((ours[0].get("clientConfig") or {}).get("caBundle"))
            hooks.append(
                {
                    "name": _meta(h).get("name"),
                    "caValidUntil": expiry.strftime("%Y-%m-%dT%H:%M:%SZ") if expiry else None,
                    "caDaysLeft": None if expiry is None else int((expiry - now).total_seconds() // 86400),
                }
            )
    return {"deployments": deps, "webhooks": hooks}
