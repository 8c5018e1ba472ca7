"""Desired children of an OJSWorker (design.md §worker-children, §labels, §field-managers, §env-merge)."""

from __future__ import annotations

import copy

from ojsctrl.api.cluster import OJSCluster
from ojsctrl.api.durations import duration_seconds
from ojsctrl.api.worker import OJSWorker
from ojsctrl.builders.cluster import api_key_ref, endpoint
from ojsctrl.builders.common import (
    APP_WORKER,
    COMPONENT_WORKER,
    CONFIG_HASH_ANNOTATION,
    DEFAULT_CLUSTER_DOMAIN,
    JSON,
    canonical_resources,
    container_security_context,
    env_field,
    env_secret,
    env_value,
    merge_env,
    name_of,
    namespace_of,
    object_meta,
    pod_scheduling,
    pod_security_context,
    pod_template_metadata,
    selector_labels,
    selector_string,
    standard_labels,
    tmp_volume,
)

WORKER_CONTAINER = "worker"
# OJS graceful-shutdown spec: the kubelet's grace period outlasts the worker's own drain by this margin.
GRACE_MARGIN_SECONDS = 10
# How long the OJS worker SDKs wait for active jobs after SIGTERM, whatever the pod says: 25 s, fixed in
# the Python (worker.py), JS (worker.ts), Rust, Java and Ruby SDKs and the Go SDK's default
# (options.go gracePeriod); reference/ojs-ecosystem.md. The pod's grace period stays above it.
SDK_GRACE_SECONDS = 25
# autoscaling/v2 rejects a stabilisation window above one hour (design.md §durations).
MAX_HPA_WINDOW_SECONDS = 3600


WORKER_SUFFIX = "-worker"


def deployment_name_of(worker_name: str) -> str:
    """Name of a worker's Deployment and HPA from the worker's name (for callers without a parsed worker)."""
    return worker_name + WORKER_SUFFIX


def worker_of_deployment_name(name: str) -> str | None:
    """The worker a Deployment name belongs to, or None when it is not a worker Deployment's name."""
    return name[: -len(WORKER_SUFFIX)] if name.endswith(WORKER_SUFFIX) else None


def worker_deployment_name(worker: OJSWorker) -> str:
    """Name of the worker Deployment and HPA: ``<worker>-worker``, never the bare worker name."""
    return deployment_name_of(name_of(worker))


def worker_selector(worker: OJSWorker) -> dict[str, str]:
    """Selector of the worker pods: exactly {name, instance, component}, nothing mutable (design.md
    §labels)."""
    return selector_labels(APP_WORKER, name_of(worker), COMPONENT_WORKER)


def worker_labels(worker: OJSWorker) -> dict[str, str]:
    """Labels of the worker's Deployment, HPA and pods."""
    return standard_labels(APP_WORKER, name_of(worker), COMPONENT_WORKER)


def worker_selector_string(worker: OJSWorker) -> str:
    """The pods' label selector serialised for ``status.selector`` (the scale subresource), keys sorted."""
    return selector_string(worker_selector(worker))


def worker_env(
    worker: OJSWorker, cluster: OJSCluster, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
) -> list[JSON]:
    """The worker container's env: the operator's variables, then the user's, user entries winning by name.

    OJS_URL is always the cluster's in-cluster endpoint, never the operator's --ojs-url-template (design.md
    §env-merge).
    """
    spec = worker.spec
    url = endpoint(cluster, cluster_domain)
    env = [
        env_value("OJS_URL", url),
        env_value("OJS_BACKEND_URL", url),
        env_value("OJS_QUEUES", ",".join(spec.queues)),
        env_value("OJS_QUEUE", spec.queues[0]),
        env_value("OJS_JOB_TYPES", ",".join(spec.job_types)),
    ]
    if spec.concurrency > 0:
        env.append(env_value("OJS_CONCURRENCY", str(spec.concurrency)))
    # Seconds, as the OJS SDK specification's environment table defines OJS_SHUTDOWN_TIMEOUT.
    env.append(env_value("OJS_SHUTDOWN_TIMEOUT", str(spec.graceful_shutdown.timeout_seconds)))
    key_ref = api_key_ref(cluster)
    if key_ref is not None:
        env.append(env_secret("OJS_AUTH_TOKEN", key_ref.name, key_ref.key))
    # No OJS_WORKER_ID: no SDK reads it (design.md §drain). The drain matches workers to pods by the hostname
    # in their ids or the server's report; POD_NAME is there for applications that report it themselves.
    env.append(env_field("POD_NAME", "metadata.name"))
    env.append(env_field("POD_NAMESPACE", "metadata.namespace"))
    return merge_env(env, spec.env)


def termination_grace_seconds(worker: OJSWorker) -> int:
    """The pod's grace period: ``gracefulShutdown.timeoutSeconds`` + 10 s, and never less than the SDKs'
    own 25 s grace + 10 s, so the kubelet's SIGKILL never cuts a worker's drain short (design.md §drain)."""
    timeout = worker.spec.graceful_shutdown.timeout_seconds
    return max(timeout, SDK_GRACE_SECONDS) + GRACE_MARGIN_SECONDS


def worker_deployment(
    worker: OJSWorker,
    cluster: OJSCluster,
    *,
    config_hash: str,
    replicas: int | None,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> JSON:
    """Deployment ``<worker>-worker`` running the user's worker image against ``cluster``.

    ``replicas`` None leaves ``spec.replicas`` to the autoscaler's field manager or the HPA. ``config_hash``
    (covering the cluster's API key value among the inputs) on the pod template rolls the workers when it
    changes. The user's command, args, envFrom and resources are kept verbatim.
    """
    if namespace_of(worker) != namespace_of(cluster):
        raise ValueError("an OJSWorker can only use an OJSCluster of its own namespace")
    spec = worker.spec
    selector = worker_selector(worker)
    labels = worker_labels(worker)
    volume, mount = tmp_volume()
    container: JSON = {"name": WORKER_CONTAINER, "image": spec.image}
    if spec.command is not None:
        container["command"] = list(spec.command)
    if spec.args is not None:
        container["args"] = list(spec.args)
    container["env"] = worker_env(worker, cluster, cluster_domain)
    if spec.env_from:
        container["envFrom"] = copy.deepcopy(spec.env_from)
    if spec.resources is not None:
        container["resources"] = canonical_resources(spec.resources)
    container["securityContext"] = container_security_context(spec.security_context)
    container["volumeMounts"] = [mount]
    pod_spec: JSON = {
        "containers": [container],
        "securityContext": pod_security_context(spec.security_context),
        "terminationGracePeriodSeconds": termination_grace_seconds(worker),
        "volumes": [volume],
    }
    pod_spec.update(pod_scheduling(spec))
    template = {
        "metadata": pod_template_metadata(spec, labels, {CONFIG_HASH_ANNOTATION: config_hash}),
        "spec": dict(sorted(pod_spec.items())),
    }
    body_spec: JSON = {}
    if replicas is not None:
        body_spec["replicas"] = replicas
    body_spec["selector"] = {"matchLabels": selector}
    body_spec["template"] = template
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(worker, worker_deployment_name(worker), labels),
        "spec": body_spec,
    }


def hpa_wanted(worker: OJSWorker) -> bool:
    """Whether the worker scales through an owned HPA (autoscaling on with metric cpu)."""
    scaling = worker.spec.auto_scaling
    return scaling.enabled and scaling.metric == "cpu"


def worker_hpa(worker: OJSWorker) -> JSON | None:
    """autoscaling/v2 HPA ``<worker>-worker`` on CPU utilisation; None unless autoscaling uses metric cpu.

    The scale-down stabilisation window is scaleDownDelay, capped at the API's one-hour limit.
    """
    if not hpa_wanted(worker):
        return None
    scaling = worker.spec.auto_scaling
    # An HPA cannot scale to zero; admission forbids minReplicas 0 with metric cpu, this keeps the body valid.
    min_replicas = max(1, scaling.min_replicas)
    window = min(MAX_HPA_WINDOW_SECONDS, int(duration_seconds(scaling.scale_down_delay)))
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(worker, worker_deployment_name(worker), worker_labels(worker)),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": worker_deployment_name(worker),
            },
            "minReplicas": min_replicas,
            "maxReplicas": max(min_replicas, scaling.max_replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.cpu_utilization},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}},
        },
    }
