"""Bad input: generated hostile edits of valid specs get a condition naming the problem, and no error loop.

A reliability test (docs/reliability.md); conventions in tests/e2e/conftest.py.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import pytest

from ojsctrl.api import validate_cluster, validate_worker
from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS
from ojsctrl.runtime.client import (
    SECRETS,
    InvalidError,
)
from tests.harness import ledger
from tests.harness.controlplane import ControlPlane
from tests.harness.figures import figure
from tests.harness.kube import (
    FULL,
    OJS_API,
    cond_of,
    driver,
    secret,
    size,
    status_of,
    wait_until,
)
from tests.harness.operator import Shared, log_records, metric, reconcile_failures, unexpected_failures
from tests.harness.storm import cluster_body

# Full sizes (OJSCTRL_FULL=1) outlast the default 600 s per test.
pytestmark = pytest.mark.timeout(3600 if FULL else 600)

# Hostile edits of a valid spec: rules only Python checks (they bypass admission while the webhook is off),
# rules CEL checks (rejected at create), values only the API server's Deployment/Pod validation or admission
# refuses (the operator's child is rejected), and references to things that do not exist.
CLUSTER_MUTATIONS: dict[str, dict[str, Any]] = {
    "requests>limits": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    "redis requests>limits": {
        "backend": {
            "type": "redis",
            "embedded": True,
            "url": None,
            "urlSecretRef": None,
            "redis": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
        }
    },
    "lite with url": {
        "backend": {"type": "lite", "url": "redis://r:6379", "embedded": None, "urlSecretRef": None}
    },
    "lite with 3 replicas": {
        "backend": {"type": "lite", "url": None, "embedded": None, "urlSecretRef": None},
        "replicas": 3,
    },
    "embedded nats": {"backend": {"type": "nats", "url": None, "urlSecretRef": None, "embedded": True}},
    "redis without url": {"backend": {"type": "redis", "url": None, "urlSecretRef": None, "embedded": None}},
    "min>max": {"autoScaling": {"enabled": True, "minReplicas": 4, "maxReplicas": 2}},
    "bad duration": {"autoScaling": {"enabled": True, "scaleDownCooldown": "abc"}},
    "pdb min and max": {"replicas": 2, "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
    "bad pdb percent": {"podDisruptionBudget": {"maxUnavailable": "bad%"}},
    "reserved pod label": {"podLabels": {"app.kubernetes.io/name": "x"}},
    "bad pod label key": {"podLabels": {"bad key!": "x"}},
    "bad pod label value": {"podLabels": {"team": "-bad-"}},
    "bad annotation key": {"podAnnotations": {"bad key!": "x"}},
    "bad monitoring label": {"monitoring": {"enabled": True, "labels": {"x": "y" * 70}}},
    "bad node selector": {"nodeSelector": {"disk": "-ssd-"}},
    "root with runAsNonRoot": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
    "negative uid": {"securityContext": {"runAsUser": -1}},
    "bogus toleration": {"tolerations": [{"key": "k", "operator": "Bogus"}]},
    "zero skew": {
        "topologySpreadConstraints": [
            {
                "maxSkew": 0,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ]
    },
    "bad topology key": {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "bad key", "whenUnsatisfiable": "Sometimes"}
        ]
    },
    "spaced image": {"image": " spaced:1 "},
    "missing priority class": {"priorityClassName": "no-such-class"},
    "missing service account": {"serviceAccountName": "missing-sa"},
    "bad priority class name": {"priorityClassName": "Bad_Name"},
    "absent url secret": {
        "backend": {
            "type": "postgres",
            "url": None,
            "embedded": None,
            "urlSecretRef": {"name": "absent", "key": "url"},
        }
    },
    "absent key in url secret": {
        "backend": {
            "type": "postgres",
            "url": None,
            "embedded": None,
            "urlSecretRef": {"name": "bad-db", "key": "nope"},
        }
    },
    "absent api key secret": {"auth": {"apiKeySecretRef": {"name": "absent", "key": "api-key"}}},
    "inline password": {
        "backend": {
            "type": "postgres",
            "url": "postgres://u:hunter2-inline-pw@db/x",
            "embedded": None,
            "urlSecretRef": None,
        }
    },
    "bad quantity": {"resources": {"limits": {"memory": "lots"}}},
    "negative replicas": {"replicas": -1},
}
WORKER_MUTATIONS: dict[str, dict[str, Any]] = {
    "requests>limits": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    "duplicate env": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
    "env name with =": {"env": [{"name": "B=C", "value": "1"}]},
    "env value and valueFrom": {
        "env": [{"name": "A", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    },
    "duplicate job types": {"jobTypes": ["a.b", "a.b"]},
    "duplicate queues": {"queues": ["q", "q"]},
    "empty job type": {"jobTypes": [""]},
    "no job types": {"jobTypes": []},
    "scale to zero with cpu": {
        "autoScaling": {"enabled": True, "metric": "cpu", "minReplicas": 0, "maxReplicas": 2}
    },
    "cpu window over 1h": {
        "autoScaling": {
            "enabled": True,
            "metric": "cpu",
            "minReplicas": 1,
            "maxReplicas": 2,
            "scaleDownDelay": "2h",
        }
    },
    "min>max": {"autoScaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 1}},
    "sub-second polling": {"autoScaling": {"enabled": True, "pollingInterval": "0.5s"}},
    "bogus metric": {"autoScaling": {"enabled": True, "metric": "bogus"}},
    "negative grace": {"gracefulShutdown": {"timeoutSeconds": -1}},
    "negative concurrency": {"concurrency": -1},
    "absent cluster": {"clusterRef": "absent"},
    "invalid cluster": {"clusterRef": "broken"},
    "reserved pod label": {"podLabels": {"app.kubernetes.io/instance": "x"}},
    "bogus toleration": {"tolerations": [{"key": "k", "operator": "Bogus"}]},
    "spaced image": {"image": " spaced:1 "},
    "missing service account": {"serviceAccountName": "missing-sa"},
    "root with runAsNonRoot": {"securityContext": {"runAsNonRoot": True, "runAsUser": 0}},
    "drain with cpu": {
        "gracefulShutdown": {"drainBeforeShutdown": True},
        "autoScaling": {"enabled": True, "metric": "cpu", "minReplicas": 1, "maxReplicas": 2},
    },
}


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a None value removes the key."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _strategies() -> Any:
    """(kind, spec, mutation names): mostly a valid base spec with up to two hostile edits, sometimes a spec
    drawn field by field from a hostile vocabulary."""
    from hypothesis import strategies as st

    def opt(d: dict[str, Any]) -> Any:
        return st.fixed_dictionaries({}, optional=d)

    base_cluster = st.sampled_from(
        [
            {"backend": {"type": "lite"}, "replicas": 1},
            {"backend": {"type": "nats", "url": "nats://n:4222"}, "replicas": 1},
            {"backend": {"type": "redis", "embedded": True}, "replicas": 1},
            {
                "backend": {"type": "postgres", "urlSecretRef": {"name": "bad-db", "key": "url"}},
                "replicas": 2,
            },
        ]
    )
    base_worker = st.sampled_from(
        [
            {"clusterRef": "anchor", "jobTypes": ["a.b"], "image": "example.invalid/w:1", "replicas": 1},
            {
                "clusterRef": "anchor",
                "jobTypes": ["a.b", "c.d"],
                "queues": ["q1"],
                "image": "example.invalid/w:1",
                "autoScaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2, "pollingInterval": "5s"},
            },
        ]
    )

    def mutated(kind: str, base: Any, table: dict[str, dict[str, Any]]) -> Any:
        names = st.lists(st.sampled_from(sorted(table)), max_size=2, unique=True)

        def build(pair: tuple[dict[str, Any], list[str]]) -> tuple[str, dict[str, Any], tuple[str, ...]]:
            spec, chosen = pair
            for name in chosen:
                spec = _merge(spec, table[name])
            return kind, spec, tuple(chosen)

        return st.tuples(base, names).map(build)

    quantity = st.sampled_from(["100m", "1", "0.5", "128Mi", "-1", "abc", "3Ti"])
    duration = st.sampled_from(["30s", "5m", "1h30m", "0s", "-5s", "abc", "999999h"])
    label_key = st.sampled_from(["team", "example.com/tier", "app.kubernetes.io/name", "bad key!"])
    labels = st.dictionaries(label_key, st.sampled_from(["a", "", "-bad-", "ok.value_1"]), max_size=2)
    raw_cluster = st.fixed_dictionaries(
        {
            "backend": st.fixed_dictionaries(
                {"type": st.sampled_from(["lite", "redis", "postgres", "nats", "kafka", "sqs", "bogus"])},
                optional={
                    "url": st.sampled_from(["redis://r:6379", "", "not a url"]),
                    "embedded": st.booleans(),
                },
            )
        },
        optional={
            "replicas": st.integers(-1, 3),
            "resources": opt({"requests": opt({"cpu": quantity}), "limits": opt({"cpu": quantity})}),
            "autoScaling": opt(
                {
                    "enabled": st.booleans(),
                    "minReplicas": st.integers(-1, 3),
                    "maxReplicas": st.integers(-1, 3),
                    "scaleUpCooldown": duration,
                }
            ),
            "podLabels": labels,
            "monitoring": opt(
                {"enabled": st.booleans(), "grafanaDashboard": st.booleans(), "interval": duration}
            ),
        },
    ).map(lambda spec: ("OJSCluster", spec, ("raw",)))
    raw_worker = st.fixed_dictionaries(
        {
            "clusterRef": st.sampled_from(["anchor", "absent", "broken"]),
            "jobTypes": st.lists(st.sampled_from(["a.b", "", "dup", "dup"]), max_size=3),
            "image": st.sampled_from(["example.invalid/w:1", "w", " spaced "]),
        },
        optional={
            "replicas": st.integers(-1, 3),
            "concurrency": st.integers(-1, 5),
            "env": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["A", "B=C", "", "A"])}, optional={"value": st.just("v")}
                ),
                max_size=2,
            ),
            "autoScaling": opt(
                {
                    "enabled": st.booleans(),
                    "metric": st.sampled_from(["queueDepth", "cpu"]),
                    "minReplicas": st.integers(-1, 3),
                    "maxReplicas": st.integers(-1, 3),
                    "pollingInterval": st.sampled_from(["1s", "abc", "0.5s"]),
                }
            ),
        },
    ).map(lambda spec: ("OJSWorker", spec, ("raw",)))
    return st.one_of(
        mutated("OJSCluster", base_cluster, CLUSTER_MUTATIONS),
        mutated("OJSWorker", base_worker, WORKER_MUTATIONS),
        mutated("OJSCluster", base_cluster, CLUSTER_MUTATIONS),
        mutated("OJSWorker", base_worker, WORKER_MUTATIONS),
        raw_cluster,
        raw_worker,
    )


READY_REASONS = {
    "Running",
    "Pending",
    "Scaling",
    "Degraded",
    "Draining",
    "Error",
    "InvalidSpec",
    "SecretNotFound",
    "NameConflict",
    "ClusterNotFound",
    "ClusterInvalid",
    "RolloutFailed",
    "WaitingForAPIKey",
}


def test_generated_bad_resources_get_a_condition_and_no_error_loop(
    crds: ControlPlane, shared: Shared
) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    ns = shared.ns["bad"]
    client = driver(crds)
    op = shared.op
    n = size(60, 500)
    client.create(
        SECRETS, secret(ns, "bad-db", {"url": "postgres://ojs:pw-generated-spec-9f3@db:5432/x"}), ns
    )
    ledger.plant(
        *{"postgres://ojs:pw-generated-spec-9f3@db:5432/x", "pw-generated-spec-9f3", "hunter2-inline-pw"}
    )
    client.create(OJSCLUSTERS, cluster_body("anchor", ns), ns)
    # A cluster that only Python refuses, for workers to point at.
    broken = client.create(
        OJSCLUSTERS,
        cluster_body("broken", ns, resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        ns,
    )
    strategy = _strategies()
    created: dict[tuple[str, str], dict[str, Any]] = {("OJSCluster", "broken"): broken}
    mutations_of: dict[str, tuple[str, ...]] = {"broken": ("requests>limits",)}
    rejected: collections.Counter[str] = collections.Counter()
    counter = iter(range(10**6))
    errors_before = sum(
        metric(op, "controller_runtime_reconcile_errors_total", {"controller": c})
        for c in ("ojscluster", "ojsworker")
    )

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def submit(item: tuple[str, dict[str, Any], tuple[str, ...]]) -> None:
        kind, spec, mutations = item
        i = next(counter)
        name = f"h-{i:04d}" if kind == "OJSCluster" else f"hw-{i:04d}"
        res = OJSCLUSTERS if kind == "OJSCluster" else OJSWORKERS
        body = {
            "apiVersion": OJS_API,
            "kind": kind,
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
        try:
            obj = client.create(res, body, ns)
        except InvalidError as e:
            causes = e.causes
            rejected[(causes[0].get("field") if causes else "") or e.reason] += 1
            return
        created[(kind, name)] = obj
        mutations_of[name] = mutations

    started = time.monotonic()
    submit()
    submitted = time.monotonic() - started
    assert created, "CEL rejected every generated spec: the generator is too hostile"

    def settled() -> list[str]:
        pending = []
        for res in (OJSCLUSTERS, OJSWORKERS):
            live = {o["metadata"]["name"]: o for o in client.list(res, ns)[0]}
            for (kind, name), _ in created.items():
                if kind != res.kind:
                    continue
                o = live.get(name)
                st_ = status_of(o)
                if (
                    o is None
                    or st_.get("observedGeneration") != o["metadata"]["generation"]
                    or not cond_of(o, "Ready")
                ):
                    pending.append(name)
        return pending

    last: list[str] = []

    def all_settled() -> bool:
        nonlocal last
        last = settled()
        return not last

    try:
        wait_until("every created object has a Ready condition", all_settled, size(150, 600), 1.0)
    except AssertionError:
        raise AssertionError(
            f"{len(last)} objects without a current Ready condition, e.g. "
            f"{[(x, mutations_of.get(x)) for x in last[:8]]}; "
            f"failures {reconcile_failures(op)}; "
            + "; ".join(
                f"{r.get('key')}: {r.get('error_type')} {str(r.get('error'))[:160]}"
                for r in log_records(op)
                if r.get("event") == "reconcile failed"
            )[-1500:]
        ) from None
    converge_s = time.monotonic() - started

    # Every condition names the problem: the Python rules (which admission would have applied) decide.
    outcomes: collections.Counter[str] = collections.Counter()
    by_mutation: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    wrong: list[str] = []
    for res in (OJSCLUSTERS, OJSWORKERS):
        for o in client.list(res, ns)[0]:
            if (res.kind, o["metadata"]["name"]) not in created:
                continue
            ready = cond_of(o, "Ready")
            outcomes[f"{res.kind}:{ready.get('reason')}"] += 1
            for m in mutations_of.get(o["metadata"]["name"], ()) or ("none",):
                by_mutation[f"{res.kind} {m}"][str(ready.get("reason"))] += 1
            if res == OJSCLUSTERS:
                errors = validate_cluster(o).errors
            else:
                ref = (o.get("spec") or {}).get("clusterRef")
                exists = any(c["metadata"]["name"] == ref for c in client.list(OJSCLUSTERS, ns)[0])
                errors = validate_worker(o, cluster_exists=exists).errors
            if errors:
                if ready.get("reason") != "InvalidSpec" or errors[0].path not in ready.get("message", ""):
                    wrong.append(
                        f"{o['metadata']['name']}: want InvalidSpec naming {errors[0].path}, got {ready}"
                    )
            elif ready.get("reason") == "InvalidSpec":
                # Only a child the API server refused may make a spec the Python rules accept invalid.
                if "refused by the API server" not in ready.get("message", ""):
                    wrong.append(f"{o['metadata']['name']}: InvalidSpec without a rule: {ready}")
            elif ready.get("reason") not in READY_REASONS:
                wrong.append(f"{o['metadata']['name']}: unexpected {ready}")
            if ready.get("status") == "False" and not ready.get("message"):
                wrong.append(f"{o['metadata']['name']}: Ready=False without a message")
    assert wrong == [], wrong[:10]

    # No hot loop: once settled, reconcile errors grow slowly (exponential backoff), if at all.
    errors_settled = sum(
        metric(op, "controller_runtime_reconcile_errors_total", {"controller": c})
        for c in ("ojscluster", "ojsworker")
    )
    window = 10.0
    time.sleep(window)
    errors_later = sum(
        metric(op, "controller_runtime_reconcile_errors_total", {"controller": c})
        for c in ("ojscluster", "ojsworker")
    )
    rate = (errors_later - errors_settled) / window
    assert rate < 1.0, f"reconcile errors grow at {rate:.1f}/s after settling"
    assert unexpected_failures(op) == [], unexpected_failures(op)[:10]
    assert op.proc.poll() is None
    figure(
        "bad_resources",
        generated=sum(rejected.values()) + len(created),
        rejected_at_create=sum(rejected.values()),
        rejected_by_field=dict(rejected.most_common(12)),
        created=len(created),
        outcomes=dict(outcomes.most_common()),
        ready_reason_by_mutation={k: dict(v) for k, v in sorted(by_mutation.items())},
        submit_s=round(submitted, 1),
        all_conditions_s=round(converge_s, 1),
        reconcile_errors_while_settling=errors_settled - errors_before,
        reconcile_errors_per_s_after=round(rate, 2),
        failure_types=dict(reconcile_failures(op)),
    )
