"""The OJSWorker reconciler and queue-depth autoscaling, against the real control plane and the
test OJS server."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ojsctrl.controllers.common import OJSCLUSTERS, OJSWORKERS, STATUS_MIN_INTERVAL
from ojsctrl.runtime.client import DEPLOYMENTS, HPAS, PODS, Client
from tests.harness.controlplane import ControlPlane
from tests.harness.kube import (
    cond,
    create,
    driver,
    get,
    has_event,
    mutating_by_operator,
    namespace,
    ojs_cluster,
    ojs_worker,
    operator_requests_on,
    phase,
    replicas,
    sample,
    status_of,
    wait_until,
    wcond,
    wstatus,
)
from tests.harness.ojs import cluster_api_key, keyed_ojs_server
from tests.harness.operator import OperatorProcess, start_ojsctrl
from tests.harness.sdkpods import PodWorkers
from tests.ojsserver.server import OJSTestServer

OJS_URL = "/{namespace}/{name}"


@pytest.fixture(scope="module")
def ojs_server(crds: ControlPlane) -> Iterator[OJSTestServer]:
    # The double wants a key as every real server does: under /<namespace>/<cluster> the one that
    # cluster's Secret holds (generated or spec.auth.apiKeySecretRef), elsewhere a key nobody has. Every
    # call the operator makes here thus proves it sends the cluster's key as a bearer token.
    server = keyed_ojs_server(driver(crds))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def operator(crds: ControlPlane, ojs_server: OJSTestServer) -> Iterator[OperatorProcess]:
    # One test server stands in for every cluster: the path prefix names the cluster, so faults can
    # target one of them. A sync period far beyond the module: whatever a test sees happen came by a
    # watch or the operator's own timers, never a resync (the resync test runs its own operator).
    op = start_ojsctrl(crds, ojs_server.base_url + OJS_URL, "--sync-period", "10h", name="ojsctrl-worker")
    yield op
    op.stop()


def replicas_ready(client: Client, ns: str, dep: str) -> int:
    obj = get(client, DEPLOYMENTS, ns, dep)
    return 0 if obj is None else int((obj.get("status") or {}).get("readyReplicas") or 0)


def under_autoscaler(client: Client, ns: str, dep: str) -> bool:
    """The Deployment's replicas are the autoscaler's (its annotation says so)."""
    annotations = (get(client, DEPLOYMENTS, ns, dep) or {}).get("metadata", {}).get("annotations", {})
    return annotations.get("ojs.openjobspec.dev/autoscaler") == "true"


def cluster(client: Client, ns: str, name: str = "jobs", **spec: Any) -> None:
    client.create(OJSCLUSTERS, ojs_cluster(ns, name, {"backend": {"type": "lite"}, **spec}), ns)


def worker(client: Client, ns: str, name: str, queue: str, **spec: Any) -> None:
    body = {
        "clusterRef": "jobs",
        "jobTypes": ["t.run"],
        "queues": [queue],
        "image": "example.invalid/w:1",
        **spec,
    }
    client.create(OJSWORKERS, ojs_worker(ns, name, body), ns)


def test_readme_multi_worker_example(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "multi")
    for doc in sample("readme-multi-worker.yaml"):
        create(client, doc, ns)
    for name in ("email-worker", "data-processor"):
        wait_until(f"{name} Running", lambda n=name: wstatus(client, ns, n).get("phase") == "Running", 120)
    dep = client.get(DEPLOYMENTS, "data-processor-worker", ns)
    assert dep["spec"]["replicas"] == 3
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["OJS_URL"]["value"] == f"http://ojs-multi-server.{ns}.svc.cluster.local:8080"
    assert env["OJS_BACKEND_URL"]["value"] == env["OJS_URL"]["value"]
    assert env["OJS_QUEUES"]["value"] == "data-processing" and env["OJS_QUEUE"]["value"] == "data-processing"
    assert env["OJS_JOB_TYPES"]["value"] == "data.transform,report.generate"
    assert env["OJS_CONCURRENCY"]["value"] == "50"
    assert env["OJS_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ojs-multi-api-key"
    # No SDK reads OJS_WORKER_ID (design.md §drain): it is gone; POD_NAME is there for applications.
    assert "OJS_WORKER_ID" not in env
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 40
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "ojs-worker",
        "app.kubernetes.io/instance": "data-processor",
        "app.kubernetes.io/component": "worker",
    }
    st = wstatus(client, ns, "data-processor")
    assert st["selector"] == (
        "app.kubernetes.io/component=worker,app.kubernetes.io/instance=data-processor,"
        "app.kubernetes.io/name=ojs-worker"
    )
    assert st["readyReplicas"] == 3
    # The autoscaled example starts from its replicas (2) inside [1, 10] under the autoscaler's manager.
    email = client.get(DEPLOYMENTS, "email-worker-worker", ns)
    assert email["metadata"]["annotations"]["ojs.openjobspec.dev/autoscaler"] == "true"
    assert email["spec"]["replicas"] == 2

    # kubectl scale through the scale subresource works with autoscaling off.
    client.patch(OJSWORKERS, "data-processor", {"spec": {"replicas": 1}}, ns, subresource="scale")
    wait_until("scaled to 1", lambda: replicas(client, ns, "data-processor-worker") == 1, 60)

    def settled() -> bool:
        st = wstatus(client, ns, "data-processor")
        return st.get("replicas") == 1 and st.get("readyReplicas") == 1 and st.get("phase") == "Running"

    wait_until("settled at 1", settled, 90)

    # Steady state: nothing changed, nothing written.
    time.sleep(2)
    since = time.time()
    client.patch(OJSWORKERS, "data-processor", {"metadata": {"labels": {"touched": "yes"}}}, ns)
    time.sleep(4)
    writes = [w for w in mutating_by_operator(crds, since, ns) if "/events" not in w]
    assert writes == []


def test_new_healthy_pair_costs_one_status_write_each_and_no_event(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    # A cluster and a worker that simply come up: their first status is held while they are Pending
    # with nothing wrong, so each gets one status write (Running) and no phase event.
    client = driver(crds)
    ns = namespace(crds, "budget")
    since = time.time() - 1
    cluster(client, ns)
    worker(client, ns, "lean", "q-lean")
    wait_until("worker Running", lambda: wstatus(client, ns, "lean").get("phase") == "Running", 90)
    wait_until("cluster Running", lambda: phase(client, ns, "jobs") == "Running", 60)
    time.sleep(3)
    writes = mutating_by_operator(crds, since, ns)
    cluster_status = [w for w in writes if "/ojsclusters/jobs/status" in w]
    worker_status = [w for w in writes if "/ojsworkers/lean/status" in w]
    events = [w for w in writes if "/events" in w]
    assert len(cluster_status) == 1, writes
    assert len(worker_status) == 1, writes
    assert events == [], writes
    # The caches cover every object of the child kinds (ours in full, the rest as metadata), so no
    # child is read with a GET before its first apply; a read only follows our own apply of it (the
    # cache had not caught up yet).
    applied: set[str] = set()
    early_reads = []
    for e in crds.audit_events():
        uri = e.get("requestURI", "").split("?")[0]
        if (
            not e.get("userAgent", "").startswith("ojsctrl/")
            or f"/namespaces/{ns}/" not in uri
            or not any(f"/{kind}/" in uri for kind in ("deployments", "services", "configmaps"))
        ):
            continue
        if e.get("verb") == "patch":
            applied.add(uri)
        elif e.get("verb") == "get" and uri not in applied:
            early_reads.append(uri)
    assert early_reads == []


def test_worker_before_its_cluster(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "order")
    worker(client, ns, "early", "q-early")
    wait_until(
        "Error / ClusterFound False",
        lambda: wcond(client, ns, "early", "ClusterFound").get("status") == "False",
        60,
    )
    assert wstatus(client, ns, "early")["phase"] == "Error"
    # The missing cluster is told as a Warning event on the worker.
    wait_until(
        "ClusterNotFound Warning event on the worker",
        lambda: has_event(client, ns, "OJSWorker", "early", "ClusterNotFound", "Warning"),
        30,
    )
    # With a 10 h sync period only the cluster's watch event can wake the worker.
    created = time.monotonic()
    cluster(client, ns)
    wait_until("worker deployment", lambda: get(client, DEPLOYMENTS, ns, "early-worker") is not None, 30)
    assert time.monotonic() - created < 15, "the worker waited for a timer, not the cluster's creation"
    wait_until("Running", lambda: wstatus(client, ns, "early").get("phase") == "Running", 90)
    client.delete(OJSCLUSTERS, "jobs", ns)
    wait_until(
        "Error after the cluster is deleted", lambda: wstatus(client, ns, "early").get("phase") == "Error", 30
    )
    assert get(client, DEPLOYMENTS, ns, "early-worker") is not None


def test_a_cluster_and_its_workers_created_together_share_one_key(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    """The first reconcile that needs a cluster's generated API key makes it, the cluster's or a worker's
    (design.md §api-key): whichever wins, there is one key, every template hash covers that key, and no
    Deployment rolls a second time."""
    from ojsctrl.builders.common import CONFIG_HASH_ANNOTATION, config_hash
    from ojsctrl.runtime.client import SECRETS

    client = driver(crds)
    ns = namespace(crds, "onekey")
    names = [f"w{i}" for i in range(4)]
    # Workers first, then their cluster: when it appears, its reconcile and the workers' race for the key.
    for name in names:
        worker(client, ns, name, f"q-{name}")
    cluster(client, ns)
    for name in names:
        wait_until(f"{name} Running", lambda n=name: wstatus(client, ns, n).get("phase") == "Running", 90)
    wait_until("cluster Running", lambda: phase(client, ns, "jobs") == "Running", 90)
    key = cluster_api_key(client, ns, "jobs")
    secret = client.get(SECRETS, "jobs-api-key", ns)
    cluster_uid = client.get(OJSCLUSTERS, "jobs", ns)["metadata"]["uid"]
    assert [(r["uid"], r.get("controller")) for r in secret["metadata"]["ownerReferences"]] == [
        (cluster_uid, True)
    ]
    created = [
        e
        for e in crds.audit_events()
        if e.get("userAgent", "").startswith("ojsctrl/")
        and e.get("verb") == "create"
        and e.get("requestURI", "").split("?")[0] == f"/api/v1/namespaces/{ns}/secrets"
        and (e.get("responseStatus") or {}).get("code") == 201
    ]
    assert len(created) == 1, created
    for name in [*names, None]:
        dep_name = "jobs-server" if name is None else f"{name}-worker"
        dep = client.get(DEPLOYMENTS, dep_name, ns)
        assert dep["metadata"]["generation"] == 1, (dep_name, dep["metadata"]["generation"])
        if name is not None:
            uid = client.get(OJSWORKERS, name, ns)["metadata"]["uid"]
            annotations = dep["spec"]["template"]["metadata"]["annotations"]
            assert annotations[CONFIG_HASH_ANNOTATION] == config_hash(key.encode(), salt=uid)


def test_a_cluster_is_first_polled_once_a_server_pod_is_ready(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    """design.md §polling: while no server pod of a new cluster is ready (here none can be scheduled), the
    operator does not dial it, so no failed poll is counted for a rollout; once a pod is ready, the first
    poll follows within seconds and the counts reach the status."""
    client = driver(crds)
    ns = namespace(crds, "firstpoll")

    def polled() -> int:
        return int(ojs_server.poll_counts().get(f"/{ns}/jobs", 0))  # type: ignore[attr-defined]

    cluster(client, ns, nodeSelector={"ojs.example/no-such-node": "true"})
    wait_until("the server Deployment", lambda: get(client, DEPLOYMENTS, ns, "jobs-server") is not None, 60)
    # The first status of a healthy Pending cluster waits for --status-min-interval: long after the first
    # reconcile, which registered the cluster with the poller (and polled it at once before this rule).
    wait_until("the cluster's first status", lambda: phase(client, ns, "jobs") == "Pending", 90)
    assert replicas_ready(client, ns, "jobs-server") == 0
    assert polled() == 0
    qs = cond(client, ns, "jobs", "QueueStatsAvailable")
    assert (qs.get("status"), qs.get("reason")) == ("False", "NotPolledYet"), qs
    assert "ojs_queue_stats_errors_total" not in {
        line.split("{", 1)[0] for line in operator.metrics().splitlines() if f'namespace="{ns}"' in line
    }

    client.patch(OJSCLUSTERS, "jobs", {"spec": {"nodeSelector": None}}, ns)
    wait_until("a ready server pod", lambda: replicas_ready(client, ns, "jobs-server") >= 1, 90)
    wait_until("the first poll", lambda: polled() >= 1, 30)
    wait_until(
        "QueueStatsAvailable True",
        lambda: cond(client, ns, "jobs", "QueueStatsAvailable").get("status") == "True",
        60,
    )


def test_a_worker_on_a_cluster_that_cannot_make_its_key_says_so_within_seconds(
    crds: ControlPlane, operator: OperatorProcess
) -> None:
    client = driver(crds)
    ns = namespace(crds, "nokey")
    # A cluster only the Python rules refuse: it never generates its API key.
    cluster(client, ns, resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})
    wait_until(
        "cluster InvalidSpec", lambda: cond(client, ns, "jobs", "Ready").get("reason") == "InvalidSpec", 60
    )
    worker(client, ns, "stuck", "q-stuck")
    # Nothing else wakes the worker (the cluster does not change): the held first status must come back
    # on its own after the first-status grace, not at the minutes-long safety net.
    wait_until(
        "WaitingForAPIKey",
        lambda: wcond(client, ns, "stuck", "Ready").get("reason") == "WaitingForAPIKey",
        60,
    )
    assert "not ready" in wcond(client, ns, "stuck", "Ready")["message"]


def test_queue_depth_autoscaling(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "auto")
    cluster(client, ns)
    q = f"q-{ns}"
    worker(
        client,
        ns,
        "scaler",
        q,
        replicas=1,
        autoScaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 20,
            "targetJobsPerWorker": 10,
            "pollingInterval": "1s",
            "scaleDownDelay": "8s",
        },
    )
    wait_until("autoscaler holds replicas", lambda: under_autoscaler(client, ns, "scaler-worker"), 60)
    ojs_server.set_queue(q, available=95, active=0)
    started = time.monotonic()
    wait_until("10 replicas", lambda: replicas(client, ns, "scaler-worker") == 10, 30)
    assert time.monotonic() - started < 1 + 10
    st = wstatus(client, ns, "scaler")
    wait_until("status shows depth", lambda: wstatus(client, ns, "scaler").get("queueDepth") == 95, 30)
    assert wstatus(client, ns, "scaler").get("desiredReplicas") == 10
    assert st is not None
    # The load lasts longer than scaleDownDelay: the window must run from when it ends, not from the
    # scale-up (the worker is not evaluated while its counts stay put).
    time.sleep(max(0.0, started + 12 - time.monotonic()))
    ojs_server.set_queue(q, available=0, active=0)
    drained = time.monotonic()
    wait_until("back to 1", lambda: replicas(client, ns, "scaler-worker") == 1, 60)
    assert time.monotonic() - drained >= 7.0, "scaled down before scaleDownDelay"
    wait_until("lastScaleTime", lambda: bool(wstatus(client, ns, "scaler").get("lastScaleTime")), 10)
    wait_until(
        "Scaled event on the worker",
        lambda: has_event(client, ns, "OJSWorker", "scaler", "Scaled", "Normal"),
        30,
    )

    # scaleUpThreshold holds a small queue.
    client.patch(OJSWORKERS, "scaler", {"spec": {"autoScaling": {"scaleUpThreshold": 50}}}, ns)
    ojs_server.set_queue(q, available=30)
    time.sleep(4)
    assert replicas(client, ns, "scaler-worker") == 1

    # Scale to zero, and back to one on a new job.
    client.patch(
        OJSWORKERS,
        "scaler",
        {"spec": {"autoScaling": {"minReplicas": 0, "scaleUpThreshold": 0, "scaleDownDelay": "2s"}}},
        ns,
    )
    ojs_server.set_queue(q, available=0)
    wait_until("zero replicas", lambda: replicas(client, ns, "scaler-worker") == 0, 60)
    ojs_server.set_queue(q, available=1)
    wait_until("activated to 1", lambda: replicas(client, ns, "scaler-worker") == 1, 30)

    # Stats failing: replicas held, a condition says why.
    ojs_server.set_queue(q, available=0)
    client.patch(
        OJSWORKERS, "scaler", {"spec": {"autoScaling": {"minReplicas": 1, "scaleDownDelay": "1s"}}}, ns
    )
    ojs_server.fail.status_500 = True
    try:
        ojs_server.set_queue(q, available=500)
        wait_until(
            "StatsUnavailable",
            lambda: wcond(client, ns, "scaler", "Autoscaling").get("reason") == "StatsUnavailable",
            30,
        )
        time.sleep(3)
        assert replicas(client, ns, "scaler-worker") == 1
    finally:
        ojs_server.fail.status_500 = False


DRAIN_FIGURES: dict[str, str] = {}


@pytest.mark.parametrize("style", ["go", "python"])
def test_drain_before_shutdown_keeps_busy_pods(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer, style: str
) -> None:
    """SDK workers heartbeat from every pod as the real SDKs do; the drain ranks pods only when the ids
    tie workers to pods (Go SDK: ``worker_<hostname>_...``); with Python's random ids it says so and the
    scale-down is plain."""
    client = driver(crds)
    ns = namespace(crds, f"drain-{style}")
    cluster(client, ns)
    key = cluster_api_key(client, ns, "jobs")
    q = f"q-{ns}"
    ojs_server.set_queue(q, available=40)
    worker(
        client,
        ns,
        "drainer",
        q,
        replicas=4,
        gracefulShutdown={"drainBeforeShutdown": True},
        autoScaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 4,
            "targetJobsPerWorker": 10,
            "pollingInterval": "1s",
            "scaleDownDelay": "2s",
        },
    )
    sel = "app.kubernetes.io/instance=drainer,app.kubernetes.io/component=worker"

    def pods() -> list[str]:
        items, _ = client.list(PODS, ns, label_selector=sel)
        return sorted(p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp"))

    # Busy workers are serving ones: wait until all four are Ready (the ReplicaSet removes pods that are
    # not ready before it weighs deletion costs; the unit tests cover how the plan allows for that).
    wait_until("4 ready worker replicas", lambda: replicas_ready(client, ns, "drainer-worker") == 4, 90)
    names = pods()
    assert len(names) == 4
    busy, idle = names[:2], names[2:]
    sdk = PodWorkers(client, ns, sel, ojs_server.base_url + f"/{ns}/jobs", key, style=style, interval=1.0)
    for n in busy:
        sdk.set_busy(n, 3)
    with sdk:
        # Each SDK worker is heard (with its busy count) before the load drops.
        wait_until("every pod's SDK worker heard by the server", lambda: sdk.beaten(names), 30)
        assert all(w.errors == [] for w in sdk.running().values()), "a heartbeat failed: the key or the body"
        ojs_server.set_queue(q, available=0, active=6)  # load 6 -> 1 replica wanted
        if style == "go":
            try:
                wait_until("idle pods removed", lambda: pods() == busy, 90)
            except AssertionError:
                raise AssertionError(
                    f"pods {pods()} busy {busy} status {wstatus(client, ns, 'drainer')} "
                    f"replicas {replicas(client, ns, 'drainer-worker')} "
                    f"quiet {ojs_server.quiet_requests}"
                ) from None
            # Busy pods hold the count above the 1 wanted: the worker says it is draining.
            wait_until(
                "phase Draining", lambda: wstatus(client, ns, "drainer").get("phase") == "Draining", 30
            )
            assert replicas(client, ns, "drainer-worker") == 2
            matched = wcond(client, ns, "drainer", "WorkersMatched")
            assert matched.get("status") == "True", matched
            wait_until(
                "Draining phase event", lambda: has_event(client, ns, "OJSWorker", "drainer", "Draining"), 30
            )
            costs = {
                p["metadata"]["name"]: p["metadata"]
                .get("annotations", {})
                .get("controller.kubernetes.io/pod-deletion-cost")
                for p in client.list(PODS, ns, label_selector=sel)[0]
            }
            assert all(costs[b] == "3" for b in busy), costs
            # Quiet is sent in the background to the idle victims' own worker ids (never the busy ones).
            wait_until(
                "quiet for the idle victims' worker ids",
                lambda: {sdk.ids[n] for n in idle} <= set(ojs_server.quiet_requests),
                30,
            )
            assert not {sdk.ids[n] for n in busy} & set(ojs_server.quiet_requests)
            kept = sum(b in pods() for b in busy)
            DRAIN_FIGURES[style] = f"{kept}/{len(busy)}"
            print(
                f"drain figure, {style}-style ids: busy pods kept / busy at scale-down = {kept}/{len(busy)}"
            )
            assert kept == len(busy)
            # Busy workers finish; the last step removes one of them.
            for n in busy:
                sdk.set_busy(n, 0)
            ojs_server.set_queue(q, available=0, active=0)
            wait_until("one pod left", lambda: len(pods()) == 1, 90)
        else:
            wait_until(
                "WorkersMatched False / WorkerIdsUnmatched",
                lambda: wcond(client, ns, "drainer", "WorkersMatched").get("reason") == "WorkerIdsUnmatched",
                60,
            )
            matched = wcond(client, ns, "drainer", "WorkersMatched")
            assert matched["status"] == "False"
            for words in ("worker_<pod name>_", "Go SDK", "hostname", "metadata.kubernetes_pod", "Python"):
                assert words in matched["message"], matched["message"]
            # A plain scale-down: straight to what the load wants, whatever the pods are doing.
            wait_until("plain scale-down to 1", lambda: len(pods()) == 1, 60)
            assert replicas(client, ns, "drainer-worker") == 1
            kept = sum(b in pods() for b in busy)
            DRAIN_FIGURES[style] = f"{kept}/{len(busy)}"
            print(
                f"drain figure, {style}-style ids: busy pods kept / busy at scale-down = {kept}/{len(busy)}"
            )
            assert wstatus(client, ns, "drainer").get("phase") != "Draining"
            assert not {sdk.ids[n] for n in names} & set(ojs_server.quiet_requests)
        # The removed pods' workers stopped beating (their pods went), the kept ones beat on.
        wait_until("workers follow the pods", lambda: sorted(sdk.running()) == pods(), 30)
    ojs_server.set_queue(q, available=0, active=0)


def test_wrong_api_key_is_reported_without_the_key(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    """The server refuses the key the operator sends (403): the cluster says so, never showing a key;
    with the key the generated Secret holds, the counts come back."""
    client = driver(crds)
    ns = namespace(crds, "badkey")
    prefix = f"/{ns}/jobs"
    server_key = secrets.token_urlsafe(24)
    ojs_server.set_api_key(prefix, server_key)  # the server was deployed with another key
    ojs_server.set_queue(f"bk-{ns}", available=3)
    try:
        cluster(client, ns)
        generated = cluster_api_key(client, ns, "jobs")
        wait_until(
            "QueueStatsAvailable False naming the refusal",
            lambda: "forbidden" in cond(client, ns, "jobs", "QueueStatsAvailable").get("message", ""),
            60,
        )
        c = cond(client, ns, "jobs", "QueueStatsAvailable")
        assert c["status"] == "False", c
        assert c["reason"] == "APIKeyRejected" and "rejected the API key (403)" in c["message"], c
        text = str(client.get(OJSCLUSTERS, "jobs", ns)["status"])
        assert generated not in text and server_key not in text
        refused = [
            r for r in ojs_server.requests if r.path == "/ojs/v1/admin/queues" and r.authorized is False
        ]
        assert refused, "the operator sent no key the double could check"
        # The server takes the cluster's own key again: the next poll reads the counts.
        ojs_server.set_api_key(prefix, None)
        wait_until(
            "QueueStatsAvailable True with the generated key",
            lambda: cond(client, ns, "jobs", "QueueStatsAvailable").get("status") == "True",
            60,
        )
    finally:
        ojs_server.set_api_key(prefix, None)
        ojs_server.remove_queue(f"bk-{ns}")


def test_cpu_mode_hpa_and_back(crds: ControlPlane, operator: OperatorProcess) -> None:
    client = driver(crds)
    ns = namespace(crds, "cpu")
    cluster(client, ns)
    worker(
        client,
        ns,
        "cpu",
        "q-cpu",
        replicas=3,
        resources={"requests": {"cpu": "100m"}},
        autoScaling={
            "enabled": True,
            "metric": "cpu",
            "minReplicas": 2,
            "maxReplicas": 6,
            "cpuUtilization": 70,
            "scaleDownDelay": "90s",
        },
    )
    wait_until("HPA", lambda: get(client, HPAS, ns, "cpu-worker") is not None, 60)
    hpa = client.get(HPAS, "cpu-worker", ns)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "cpu-worker",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 90
    assert replicas(client, ns, "cpu-worker") == 3
    client.patch(OJSWORKERS, "cpu", {"spec": {"autoScaling": {"enabled": False}, "replicas": 2}}, ns)
    wait_until("HPA removed", lambda: get(client, HPAS, ns, "cpu-worker") is None, 60)
    wait_until("replicas from spec", lambda: replicas(client, ns, "cpu-worker") == 2, 60)


def test_replicas_handover_never_falls_to_the_default(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    from ojsctrl.runtime.informer import FuncHandler, Informer

    client = driver(crds)
    ns = namespace(crds, "handover")
    cluster(client, ns)
    q = f"q-{ns}"
    ojs_server.set_queue(q, available=70)
    seen: list[int | None] = []
    inf = Informer(driver(crds), DEPLOYMENTS, namespaces=[ns])
    inf.add_event_handler(
        FuncHandler(
            add=lambda o: (
                seen.append(o["spec"].get("replicas")) if o["metadata"]["name"] == "ho-worker" else None
            ),
            update=lambda _, o: (
                seen.append(o["spec"].get("replicas")) if o["metadata"]["name"] == "ho-worker" else None
            ),
        )
    )
    inf.start()
    try:
        worker(client, ns, "ho", q, replicas=5)
        wait_until("5 replicas", lambda: replicas(client, ns, "ho-worker") == 5, 60)
        client.patch(
            OJSWORKERS,
            "ho",
            {
                "spec": {
                    "autoScaling": {
                        "enabled": True,
                        "minReplicas": 2,
                        "maxReplicas": 10,
                        "targetJobsPerWorker": 10,
                        "pollingInterval": "1s",
                        "scaleDownDelay": "1h",
                    }
                }
            },
            ns,
        )
        wait_until("autoscaled to 7", lambda: replicas(client, ns, "ho-worker") == 7, 60)
        # kubectl scale while autoscaling is on: the condition says spec.replicas is ignored.
        client.patch(OJSWORKERS, "ho", {"spec": {"replicas": 3}}, ns, subresource="scale")
        wait_until(
            "ignored", lambda: "ignored" in wcond(client, ns, "ho", "Autoscaling").get("message", ""), 30
        )
        time.sleep(2)
        assert replicas(client, ns, "ho-worker") == 7
        client.patch(OJSWORKERS, "ho", {"spec": {"autoScaling": {"enabled": False}}}, ns)
        wait_until("back to spec.replicas 3", lambda: replicas(client, ns, "ho-worker") == 3, 60)
        time.sleep(2)
        dep = client.get(DEPLOYMENTS, "ho-worker", ns)
        assert "ojs.openjobspec.dev/autoscaler" not in (dep["metadata"].get("annotations") or {})
    finally:
        inf.stop()
    assert seen and all(r is not None and r >= 2 for r in seen), seen
    assert 1 not in seen, seen


def test_server_autoscaling_on_queue_depth(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "srv")
    client.create(
        OJSCLUSTERS,
        ojs_cluster(
            ns,
            "jobs",
            {
                "backend": {"type": "redis", "url": "redis://r:6379"},
                "replicas": 2,
                "autoScaling": {
                    "enabled": True,
                    "minReplicas": 2,
                    "maxReplicas": 5,
                    "targetQueueDepth": 100,
                    "scaleUpCooldown": "0s",
                    "scaleDownCooldown": "3s",
                },
            },
        ),
        ns,
    )
    wait_until(
        "server deployment under the autoscaler", lambda: under_autoscaler(client, ns, "jobs-server"), 60
    )
    # The shared test server answers for every cluster: total depth is the sum over all its queues.
    ojs_server.set_queue(f"srv-{ns}", available=10_000)
    wait_until("scaled to max 5", lambda: replicas(client, ns, "jobs-server") == 5, 60)
    ojs_server.set_queue(f"srv-{ns}", available=0)
    ojs_server.remove_queue(f"srv-{ns}")


def test_queue_stats_in_status_and_metrics_and_a_hung_server_slows_no_one(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    slow_ns = namespace(crds, "hung")
    fast_ns = namespace(crds, "fast")
    ojs_server.set_queue(f"stats-{fast_ns}", available=7, active=2)
    ojs_server.fail.paths = (f"/{slow_ns}/",)
    ojs_server.fail.hang = True
    try:
        cluster(client, slow_ns)
        # The hung cluster's first poll is under way (and hangs) before the fast cluster exists.
        wait_until(
            "the hung cluster's first poll",
            lambda: int(ojs_server.poll_counts().get(f"/{slow_ns}/jobs", 0)) >= 1,  # type: ignore[attr-defined]
            60,
        )
        cluster(client, fast_ns)
        # A cluster's first poll waits for a ready server pod (design.md §polling): the clock starts there,
        # so that the rollout's time is not charged to the hung server. (Whether a hung call can hold up
        # another cluster's poll at all is pinned with a controlled clock by the unit test
        # test_poller_threads_keep_every_cluster_on_time_while_one_server_hangs: here the hung call may
        # have reached its 10 s deadline by the time the fast server is ready.)
        wait_until(
            "a ready server pod of the fast cluster",
            lambda: replicas_ready(client, fast_ns, "jobs-server") >= 1,
            60,
        )
        started = time.monotonic()

        def fast_has_stats() -> bool:
            st = status_of(get(client, OJSCLUSTERS, fast_ns, "jobs"))
            return any(
                q["name"] == f"stats-{fast_ns}" and q["available"] == 7 and q["active"] == 2
                for q in st.get("queues") or []
            )

        def fast_metric() -> bool:
            return (
                operator.metric(
                    "ojs_cluster_queue_depth",
                    {"namespace": fast_ns, "cluster": "jobs", "queue": f"stats-{fast_ns}"},
                )
                == 7
            )

        # The poll result reaches the metrics at once; the status follows with the cluster's first
        # status (held while it is healthy and Pending, up to 10 s).
        wait_until("fast cluster's queue counts in the metrics", fast_metric, 30)
        assert time.monotonic() - started < 8, "the hung server delayed another cluster"
        wait_until("fast cluster shows its queue counts", fast_has_stats, 30)
        st = client.get(OJSCLUSTERS, "jobs", fast_ns)["status"]
        assert st["queueDepth"] >= 7 and st["activeJobs"] >= 2
        metric = operator.metric(
            "ojs_cluster_queue_depth", {"namespace": fast_ns, "cluster": "jobs", "queue": f"stats-{fast_ns}"}
        )
        assert metric == 7
        qs = {c["type"]: c for c in client.get(OJSCLUSTERS, "jobs", fast_ns)["status"]["conditions"]}
        assert qs["QueueStatsAvailable"]["status"] == "True"

        wait_until(
            "hung cluster reports QueueStatsAvailable=False",
            lambda: cond(client, slow_ns, "jobs", "QueueStatsAvailable").get("reason") == "ServerUnreachable",
            60,
        )
    finally:
        ojs_server.fail.hang = False
        ojs_server.fail.paths = ()
        ojs_server.release()
        ojs_server.remove_queue(f"stats-{fast_ns}")


def test_resyncs_with_nothing_changed_write_nothing(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    client = driver(crds)
    ns = namespace(crds, "resync")
    cluster(client, ns)
    worker(client, ns, "steady", f"q-{ns}", replicas=2)
    wait_until("worker Running", lambda: wstatus(client, ns, "steady").get("phase") == "Running", 90)
    wait_until("cluster Running", lambda: phase(client, ns, "jobs") == "Running", 90)
    # The module's operator never resyncs (10 h): a second one, for this namespace only, resyncs every
    # 10 s. Both must write nothing while nothing changes, its start included.
    op = start_ojsctrl(
        crds,
        ojs_server.base_url + OJS_URL,
        "--sync-period",
        "10s",
        "--watch-namespace",
        ns,
        name="ojsctrl-resync",
    )
    try:
        time.sleep(3)
        since = time.time()
        time.sleep(25)  # two and a half sync periods of 10 s
        writes = [w for w in mutating_by_operator(crds, since, ns) if "/events" not in w]
        assert writes == [], writes
        assert op.metric("controller_runtime_reconcile_total", {"controller": "ojsworker"}) is not None
    finally:
        op.stop()


def autoscaled_worker(
    crds: ControlPlane, ojs_server: OJSTestServer, prefix: str, **bounds: Any
) -> tuple[str, str]:
    """A cluster and a worker "w" on a queue of its own (empty), autoscaled on the polled counts every
    second from 1 to 6 replicas, 5 jobs each (``bounds`` adds to that); returns (namespace, queue)."""
    client = driver(crds)
    ns = namespace(crds, prefix)
    q = f"{prefix}-{ns}"
    ojs_server.set_queue(q, available=0, active=0)
    cluster(client, ns)
    autoscaling = {
        "enabled": True,
        "pollingInterval": "1s",
        "minReplicas": 1,
        "maxReplicas": 6,
        "targetJobsPerWorker": 5,
        **bounds,
    }
    worker(client, ns, "w", q, replicas=1, autoScaling=autoscaling)
    return ns, q


def test_a_decision_is_one_apply_and_a_live_foreign_writer_is_found_by_its_conflict(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    """A decision is one apply without force (no read of the Deployment first); a field manager that set
    the replicas lately is found through the API server's conflict answer and left alone (design.md
    §field-managers)."""
    client = driver(crds)
    ns, q = autoscaled_worker(crds, ojs_server, "writers")
    dep = "w-worker"
    wait_until("autoscaler holds replicas", lambda: under_autoscaler(client, ns, dep), 60)
    time.sleep(2.0)  # the reconciles of the creation are over
    since = int(time.time())  # the audit log's times have whole seconds

    # A decision: one apply as the autoscaler's field manager, without force, and no read first.
    ojs_server.set_queue(q, available=10, active=0)
    wait_until("2 replicas for 10 jobs", lambda: replicas(client, ns, dep) == 2, 60)
    time.sleep(1.5)  # the audit log is written asynchronously
    writes = operator_requests_on(crds, since, ns, "deployments", dep)
    assert writes == ["patch fieldManager=ojsctrl-autoscaler"], writes

    # Another field manager sets the replicas; the next decision meets its conflict, names it and holds.
    client.apply(
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": dep, "namespace": ns},
            "spec": {"replicas": 4},
        },
        field_manager="e2e-scaler",
        force=True,
    )
    ojs_server.set_queue(q, available=30, active=0)  # 6 wanted: a scale-up, written at once
    wait_until(
        "ReplicasManaged names the other writer",
        lambda: wcond(client, ns, "w", "ReplicasManaged").get("reason") == "ForeignReplicaWriter",
        60,
    )
    message = wcond(client, ns, "w", "ReplicasManaged").get("message", "")
    assert "e2e-scaler" in message, message
    held = wcond(client, ns, "w", "Autoscaling").get("message", "")
    assert "would scale to 6" in held, held
    time.sleep(3.0)  # several polls later, the other writer's count stands
    assert replicas(client, ns, dep) == 4


def test_a_healthy_autoscaler_scaling_is_one_status_write(
    crds: ControlPlane, operator: OperatorProcess, ojs_server: OJSTestServer
) -> None:
    """The status of an autoscaler decision waits for its rollout's end (up to --status-min-interval): a
    scaling whose pods are ready within it is one status write, with the new counts and phase Running
    (design.md §resync)."""
    client = driver(crds)
    ns, q = autoscaled_worker(crds, ojs_server, "onewrite", scaleDownDelay="3s")
    dep = "w-worker"
    wait_until("autoscaler holds replicas", lambda: under_autoscaler(client, ns, dep), 60)
    wait_until("worker Running", lambda: wstatus(client, ns, "w").get("phase") == "Running", 60)

    def ready(n: int) -> bool:
        st = status_of(get(client, DEPLOYMENTS, ns, dep))
        return st.get("readyReplicas") == n and st.get("updatedReplicas") == n and st.get("replicas") == n

    def scaling(available: int, to: int) -> tuple[list[str], float]:
        """Move the queue, wait for the scaling and its status; the worker's status writes meanwhile and
        how long the rollout took from the replicas written to the pods ready."""
        time.sleep(2.0)  # what came before is written and in the audit log
        since = int(time.time())  # the audit log's times have whole seconds
        ojs_server.set_queue(q, available=available, active=0)
        wait_until(f"{to} replicas", lambda: replicas(client, ns, dep) == to, 60, 0.05)
        scaled = time.monotonic()
        wait_until(f"{to} pods ready", lambda: ready(to), 60, 0.05)
        rollout = time.monotonic() - scaled
        wait_until(
            "the status shows the scaling done",
            lambda: (
                (st := wstatus(client, ns, "w")).get("desiredReplicas") == to
                and st.get("readyReplicas") == to
                and st.get("phase") == "Running"
            ),
            30,
        )
        time.sleep(1.5)  # the audit log is written asynchronously
        writes = [
            w for w in operator_requests_on(crds, since, ns, "ojsworkers", "w") if w.startswith("patch")
        ]
        return writes, rollout

    for available, to in ((10, 2), (0, 1)):
        writes, rollout = scaling(available, to)
        if rollout < STATUS_MIN_INTERVAL - 3.0:
            assert len(writes) == 1, (to, rollout, writes)
        else:  # a machine too busy to roll out within the grace: Scaling shows, then Running
            assert 1 <= len(writes) <= 2, (to, rollout, writes)
    assert has_event(client, ns, "OJSWorker", "w", "Scaled", "Normal")
