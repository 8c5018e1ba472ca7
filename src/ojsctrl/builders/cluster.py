"""Desired children of an OJSCluster (design.md §cluster-children, §field-managers, §secrets, §disruption,
§phases).

Each function returns a server-side apply body holding exactly the fields the operator owns, or None when the
child is not wanted (the reconciler then deletes an owned one). Secret values enter only ``api_key_secret``
and ``redis_secret``; every other object refers to Secrets by name and key.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any
from urllib.parse import quote

from ojsctrl.api import backends as contracts
from ojsctrl.api.backends import (
    API_KEY_ENV,
    GRPC_PORT,
    GRPC_PORT_ENV,
    HEALTH_PATH,
    HTTP_PORT,
    INSECURE_ENV,
    METRICS_PATH,
    PORT_ENV,
)
from ojsctrl.api.cluster import OJSCluster
from ojsctrl.api.common import DEFAULT_REDIS_IMAGE, SecretKeyRef
from ojsctrl.builders.common import (
    APP_REDIS,
    APP_SERVER,
    COMPONENT_BACKEND,
    COMPONENT_SERVER,
    CONFIG_HASH_ANNOTATION,
    DEFAULT_CLUSTER_DOMAIN,
    JSON,
    canonical_resources,
    container_security_context,
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
    standard_labels,
    tmp_volume,
)

# Ports, paths and env names of the OJS servers live in ojsctrl.api.backends (one table, with sources).
REDIS_PORT = 6379
SERVER_CONTAINER = "ojs-server"
REDIS_CONTAINER = "redis"
API_KEY_SECRET_KEY = "api-key"  # noqa: S105 - the name of a Secret key, not a secret
REDIS_PASSWORD_KEY = "password"  # noqa: S105 - the name of a Secret key, not a secret
REDIS_URL_KEY = "url"
# The server's own shutdown drain defaults to 30 s; preStop (5 s) + 30 s fits inside 40 s (design.md
# §cluster-children).
SERVER_TERMINATION_GRACE_SECONDS = 40
PRESTOP_SLEEP_SECONDS = 5
# The uid/gid of the redis user in the official images (design.md §disruption).
REDIS_UID = 999
REDIS_DATA_PATH = "/data"
DASHBOARD_LABEL = "grafana_dashboard"

# Redis gets modest defaults so that it is never unbounded when the user sets nothing (production checklist).
DEFAULT_REDIS_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}

# --- names --------------------------------------------------------------------------------------------------


SERVER_SUFFIX = "-server"
CONFIG_SUFFIX = "-config"
API_KEY_SUFFIX = "-api-key"
REDIS_SUFFIX = "-redis"
DASHBOARD_SUFFIX = "-dashboard"


def server_name_of(cluster_name: str) -> str:
    """Name of a cluster's server Deployment, Service, PodDisruptionBudget and ServiceMonitor, from the
    cluster's name (for callers that hold no parsed cluster: indexes, early status writes)."""
    return cluster_name + SERVER_SUFFIX


def cluster_of_server_name(name: str) -> str | None:
    """The cluster a server Deployment name belongs to, or None when it is not one."""
    return name[: -len(SERVER_SUFFIX)] if name.endswith(SERVER_SUFFIX) else None


def api_key_secret_name_of(cluster_name: str) -> str:
    """Name of a cluster's generated API key Secret, from the cluster's name."""
    return cluster_name + API_KEY_SUFFIX


def redis_name_of(cluster_name: str) -> str:
    """Name of a cluster's embedded Redis objects, from the cluster's name."""
    return cluster_name + REDIS_SUFFIX


def server_name(cluster: OJSCluster) -> str:
    """Name of the server Deployment, Service, PodDisruptionBudget and ServiceMonitor."""
    return server_name_of(name_of(cluster))


def config_map_name(cluster: OJSCluster) -> str:
    """Name of the server ConfigMap."""
    return name_of(cluster) + CONFIG_SUFFIX


def api_key_secret_name(cluster: OJSCluster) -> str:
    """Name of the generated API key Secret."""
    return api_key_secret_name_of(name_of(cluster))


def redis_name(cluster: OJSCluster) -> str:
    """Name of the embedded Redis Deployment, Service, Secret and PersistentVolumeClaim."""
    return redis_name_of(name_of(cluster))


def dashboard_name(cluster: OJSCluster) -> str:
    """Name of the Grafana dashboard ConfigMap."""
    return name_of(cluster) + DASHBOARD_SUFFIX


def endpoint(cluster: OJSCluster, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> str:
    """The in-cluster URL of the OJS API (``status.endpoint``, workers' OJS_URL).

    The full cluster-domain name, never ``<svc>.<ns>.svc``: with the pods' ``ndots:5`` a short name goes
    through the DNS search path first, and ``<svc>.<ns>.svc.svc.cluster.local`` is a name a tenant owning a
    namespace called ``svc`` can answer (a headless Service's endpoint hostname). The search candidates of
    the full name have too many labels to be any Service's record (design.md §cluster-domain).
    """
    return f"http://{server_name(cluster)}.{namespace_of(cluster)}.svc.{cluster_domain}:{HTTP_PORT}"


# --- labels and selectors -----------------------------------------------------------------------------------


def server_selector(cluster: OJSCluster) -> dict[str, str]:
    """Selector of the server pods."""
    return selector_labels(APP_SERVER, name_of(cluster), COMPONENT_SERVER)


def server_labels(cluster: OJSCluster) -> dict[str, str]:
    """Labels of the server and its companions (ConfigMaps, API key Secret, PDB, ServiceMonitor)."""
    return standard_labels(APP_SERVER, name_of(cluster), COMPONENT_SERVER)


def redis_selector(cluster: OJSCluster) -> dict[str, str]:
    """Selector of the embedded Redis pod."""
    return selector_labels(APP_REDIS, name_of(cluster), COMPONENT_BACKEND)


def redis_labels(cluster: OJSCluster) -> dict[str, str]:
    """Labels of the embedded Redis objects."""
    return standard_labels(APP_REDIS, name_of(cluster), COMPONENT_BACKEND)


# --- Secret references --------------------------------------------------------------------------------------


def embedded_redis_enabled(cluster: OJSCluster) -> bool:
    """Whether the cluster wants the operator's Redis (embedded redis backend, or kafka's state store)."""
    return cluster.spec.embedded_redis()


def api_key_ref(cluster: OJSCluster) -> SecretKeyRef | None:
    """Where the API key lives: the user's apiKeySecretRef, else the generated Secret; None if auth is off."""
    auth = cluster.spec.auth
    if auth.disabled:
        return None
    if auth.api_key_secret_ref is not None:
        return auth.api_key_secret_ref
    return SecretKeyRef(name=api_key_secret_name(cluster), key=API_KEY_SECRET_KEY)


def generates_api_key(cluster: OJSCluster) -> bool:
    """Whether the operator owns the API key Secret (auth on and no apiKeySecretRef)."""
    auth = cluster.spec.auth
    return not auth.disabled and auth.api_key_secret_ref is None


def backend_url_ref(cluster: OJSCluster) -> SecretKeyRef | None:
    """The Secret key holding the backend URL: the user's urlSecretRef or the embedded Redis Secret."""
    backend = cluster.spec.backend
    if contracts.contract(backend.type).url_env is None:
        return None
    if backend.type == "redis" and backend.embedded:
        return SecretKeyRef(name=redis_name(cluster), key=REDIS_URL_KEY)
    return backend.url_secret_ref


def state_store_ref(cluster: OJSCluster) -> SecretKeyRef | None:
    """The Secret key holding kafka's state-store Redis URL: the user's or the embedded Redis Secret."""
    backend = cluster.spec.backend
    store = backend.state_store
    if contracts.contract(backend.type).state_store_env is None or store is None:
        return None
    if store.embedded:
        return SecretKeyRef(name=redis_name(cluster), key=REDIS_URL_KEY)
    return store.url_secret_ref


def referenced_secret_keys(cluster: OJSCluster) -> list[SecretKeyRef]:
    """Every Secret key the server pods read, in a fixed order: the config hash must cover all of them."""
    refs = [backend_url_ref(cluster), state_store_ref(cluster), api_key_ref(cluster)]
    return [r for r in refs if r is not None]


# --- Secrets and ConfigMaps ---------------------------------------------------------------------------------


def _b64(value: str | bytes) -> str:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(raw).decode("ascii")


def api_key_secret(cluster: OJSCluster, key_value: str | bytes) -> JSON:
    """Secret ``<name>-api-key`` holding ``key_value`` under ``api-key``.

    The caller generates the value and creates the Secret once; it is never rewritten (a rewrite would
    rotate the key under running clients). ``data`` rather than ``stringData``: stringData is not stored,
    so an apply body with it never matches the live object.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(cluster, api_key_secret_name(cluster), server_labels(cluster)),
        "type": "Opaque",
        "data": {API_KEY_SECRET_KEY: _b64(key_value)},
    }


def server_config_map(cluster: OJSCluster) -> JSON:
    """ConfigMap ``<name>-config``: the server's non-secret settings, loaded with envFrom.

    An inline backend URL is deliberately not here: it may carry credentials, and a ConfigMap is readable
    by far more principals than the Deployment's env.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(cluster, config_map_name(cluster), server_labels(cluster)),
        "data": {
            "OJS_BACKEND_TYPE": cluster.spec.backend.type,
            "OJS_GRPC_PORT": str(GRPC_PORT),
            "OJS_PORT": str(HTTP_PORT),
        },
    }


def redis_secret(cluster: OJSCluster, password: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> JSON:
    """Secret ``<name>-redis`` with ``password`` and ``url`` (what the server reads as REDIS_URL).

    The password is percent-encoded in the URL so that any generated alphabet yields a valid URL.
    """
    host = f"{redis_name(cluster)}.{namespace_of(cluster)}.svc.{cluster_domain}"  # design.md §cluster-domain
    url = f"redis://:{quote(password, safe='')}@{host}:{REDIS_PORT}/0"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(cluster, redis_name(cluster), redis_labels(cluster)),
        "type": "Opaque",
        "data": {REDIS_PASSWORD_KEY: _b64(password), REDIS_URL_KEY: _b64(url)},
    }


# --- the OJS server -----------------------------------------------------------------------------------------


def backend_env(cluster: OJSCluster) -> list[JSON]:
    """The env a backend's server reads its store from, named as the contract table says."""
    backend = cluster.spec.backend
    contract = contracts.contract(backend.type)
    env: list[JSON] = []
    if contract.url_env is not None:
        ref = backend_url_ref(cluster)
        if ref is not None:
            env.append(env_secret(contract.url_env, ref.name, ref.key))
        elif backend.url is not None:
            env.append(env_value(contract.url_env, backend.url))
    if contract.state_store_env is not None and backend.state_store is not None:
        ref = state_store_ref(cluster)
        if ref is not None:
            env.append(env_secret(contract.state_store_env, ref.name, ref.key))
        elif backend.state_store.url is not None:
            env.append(env_value(contract.state_store_env, backend.state_store.url))
    if backend.type == "sqs" and backend.sqs is not None:
        sqs = backend.sqs
        env += [
            env_value(contracts.SQS_ENV_REGION, sqs.region),
            env_value(contracts.SQS_ENV_TABLE, sqs.dynamodb_table),
            env_value(contracts.SQS_ENV_PREFIX, sqs.queue_prefix),
            env_value(contracts.SQS_ENV_FIFO, "true" if sqs.fifo else "false"),
        ]
        if sqs.endpoint:
            env.append(env_value(contracts.SQS_ENV_ENDPOINT, sqs.endpoint))
    return env


def operator_server_env(cluster: OJSCluster) -> list[JSON]:
    """The env the operator sets on the server container: ports, the backend's store, authentication."""
    env = [env_value(PORT_ENV, str(HTTP_PORT)), env_value(GRPC_PORT_ENV, str(GRPC_PORT))]
    env += backend_env(cluster)
    key_ref = api_key_ref(cluster)
    if key_ref is None:
        env.append(env_value(INSECURE_ENV, "true"))
    else:
        env.append(env_secret(API_KEY_ENV, key_ref.name, key_ref.key))
        # Lite allows unauthenticated access unless told otherwise (its config.go default); say it is off.
        env.append(env_value(INSECURE_ENV, "false"))
    return env


def server_env(cluster: OJSCluster) -> list[JSON]:
    """The server container's env: the operator's, then the user's ``spec.env`` (an entry of the same name
    replaces the operator's, design.md §env-merge)."""
    return merge_env(operator_server_env(cluster), cluster.spec.env)


def server_env_from(cluster: OJSCluster) -> list[JSON]:
    """The server container's envFrom: the operator's ConfigMap, then the user's sources (later wins)."""
    return [{"configMapRef": {"name": config_map_name(cluster)}}, *copy.deepcopy(cluster.spec.env_from or [])]


def _spreads(cluster: OJSCluster) -> bool:
    # Decided from the spec only, never from the live replica count: otherwise every autoscaler step across
    # 1 would change the pod template and roll all servers.
    spec = cluster.spec
    if spec.backend.type == "lite":
        return False
    if spec.auto_scaling.enabled:
        return spec.auto_scaling.max_replicas > 1
    return spec.effective_replicas() > 1


def _deployment(
    cluster: OJSCluster,
    name: str,
    *,
    labels: dict[str, str],
    selector: dict[str, str],
    replicas: int | None,
    strategy: JSON,
    template: JSON,
) -> JSON:
    spec: JSON = {}
    if replicas is not None:
        spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": selector}
    spec["strategy"] = strategy
    spec["template"] = template
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(cluster, name, labels),
        "spec": spec,
    }


def _strategy(recreate: bool) -> JSON:
    # The strategy is always sent whole: switching between Recreate and RollingUpdate under server-side apply
    # only works when the rollingUpdate block was ours to remove. maxUnavailable 0 keeps serving during
    # rollouts.
    if recreate:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}


def server_deployment(cluster: OJSCluster, *, image: str, config_hash: str, replicas: int | None) -> JSON:
    """Deployment ``<name>-server`` running the OJS server.

    ``image`` is the effective image (``spec.effective_image(flag)``). ``replicas`` None leaves
    ``spec.replicas`` out of the body, for when the autoscaler's field manager owns it. ``config_hash`` goes
    on the pod template so that a change of any input, Secret values included, rolls the pods.
    """
    spec = cluster.spec
    selector = server_selector(cluster)
    annotations = {CONFIG_HASH_ANNOTATION: config_hash}
    if spec.monitoring.enabled:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(HTTP_PORT),
                "prometheus.io/path": METRICS_PATH,
            }
        )
    volume, mount = tmp_volume()
    container: JSON = {
        "name": SERVER_CONTAINER,
        "image": image,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "env": server_env(cluster),
        "envFrom": server_env_from(cluster),
        "resources": canonical_resources(spec.resources),
        # Readiness follows the backend (health answers 503 while it is down); liveness and startup only check
        # the port, so a backend outage takes servers out of rotation without restarting them.
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": "http", "scheme": "HTTP"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        },
        "startupProbe": {
            "tcpSocket": {"port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 60,
        },
        # Endpoints controllers and proxies need a moment to stop sending traffic to a terminating pod.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": container_security_context(spec.security_context),
        "volumeMounts": [mount],
    }
    pod_spec: JSON = {
        "containers": [container],
        # Service links would inject e.g. REDIS_PORT=tcp://... for a Service named redis, which a server
        # reading REDIS_* could misread; the server finds everything through its explicit env.
        "enableServiceLinks": False,
        "securityContext": pod_security_context(spec.security_context),
        "terminationGracePeriodSeconds": SERVER_TERMINATION_GRACE_SECONDS,
        "volumes": [volume],
    }
    pod_spec.update(pod_scheduling(spec, spread_selector=selector if _spreads(cluster) else None))
    template = {
        "metadata": pod_template_metadata(spec, server_labels(cluster), annotations),
        "spec": dict(sorted(pod_spec.items())),
    }
    # Lite keeps its state in-process: two servers side by side during a rollout would split it.
    strategy = _strategy(spec.backend.type == "lite")
    return _deployment(
        cluster,
        server_name(cluster),
        labels=server_labels(cluster),
        selector=selector,
        replicas=replicas,
        strategy=strategy,
        template=template,
    )


def server_service(cluster: OJSCluster) -> JSON:
    """Service ``<name>-server``: port http 8080, and grpc 9090 only when ``spec.grpc.enabled`` (OJS gRPC
    has no authentication, design.md §exposure).

    Only owned fields: clusterIP, ipFamilies and the like are assigned by the API server and must survive.
    """
    ports: list[JSON] = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    if cluster.spec.grpc.enabled:
        ports.append({"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(cluster, server_name(cluster), server_labels(cluster)),
        "spec": {
            "type": "ClusterIP",
            "selector": server_selector(cluster),
            "ports": ports,
        },
    }


def pod_disruption_budget(cluster: OJSCluster) -> JSON | None:
    """PodDisruptionBudget ``<name>-server``, or None when not wanted (design.md §api-cluster, §disruption).

    ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets a drain evict pods that are not ready anyway, so a
    broken rollout can never block node maintenance.
    """
    if not cluster.spec.pdb_enabled():
        return None
    field, value = cluster.spec.pod_disruption_budget.budget()
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(cluster, server_name(cluster), server_labels(cluster)),
        "spec": {
            field: value,
            "selector": {"matchLabels": server_selector(cluster)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# --- monitoring ---------------------------------------------------------------------------------------------


def service_monitor(cluster: OJSCluster) -> JSON | None:
    """ServiceMonitor ``<name>-server`` scraping ``/metrics`` on port http; None unless requested.

    Whenever auth is on, the endpoint carries bearer authorization from the API-key Secret: lite's
    ``/metrics`` needs the key, and a user-set ``OJS_*`` env may put it behind the key elsewhere too; a key
    a server does not ask for costs nothing.
    """
    monitoring = cluster.spec.monitoring
    if not (monitoring.enabled and monitoring.service_monitor):
        return None
    endpoint: JSON = {"port": "http", "path": METRICS_PATH, "interval": monitoring.interval}
    key_ref = api_key_ref(cluster)
    if key_ref is not None:
        endpoint["authorization"] = {
            "type": "Bearer",
            "credentials": {"name": key_ref.name, "key": key_ref.key},
        }
    labels = {**(monitoring.labels or {}), **server_labels(cluster)}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": object_meta(cluster, server_name(cluster), dict(sorted(labels.items()))),
        "spec": {
            "selector": {"matchLabels": server_selector(cluster)},
            "endpoints": [endpoint],
        },
    }


def _panel(panel_id: int, title: str, exprs: list[tuple[str, str]]) -> JSON:
    # Two panels per row, 12 columns wide and 8 high each, laid out in the order given.
    position = {"h": 8, "w": 12, "x": 12 * ((panel_id - 1) % 2), "y": 8 * ((panel_id - 1) // 2)}
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": datasource,
        "gridPos": position,
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": datasource, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard_json(cluster: OJSCluster) -> JSON:
    """The Grafana dashboard of one cluster as a dict: PromQL over the operator's and kube-state metrics.

    ojs_worker_desired_replicas has no cluster label, so that panel shows the namespace's workers;
    ojs_autoscaler_scale_total has only a direction, so that panel is operator-wide.
    """
    ns = namespace_of(cluster)
    name = name_of(cluster)
    match = f'namespace="{ns}",cluster="{name}"'
    deployment = f'namespace="{ns}",deployment="{server_name(cluster)}"'
    rows: list[tuple[str, list[tuple[str, str]]]] = [
        ("Queue depth", [(f"sum by (queue) (ojs_cluster_queue_depth{{{match}}})", "{{queue}}")]),
        ("Active jobs", [(f"sum by (queue) (ojs_cluster_active_jobs{{{match}}})", "{{queue}}")]),
        (
            "Total waiting and active jobs",
            [
                (f"sum(ojs_cluster_queue_depth{{{match}}})", "waiting"),
                (f"sum(ojs_cluster_active_jobs{{{match}}})", "active"),
            ],
        ),
        ("Available servers", [(f"kube_deployment_status_replicas_available{{{deployment}}}", "available")]),
        (
            "Worker desired replicas (namespace)",
            [(f'sum by (worker) (ojs_worker_desired_replicas{{namespace="{ns}"}})', "{{worker}}")],
        ),
        (
            "Autoscaler decisions per second (operator-wide)",
            [("sum by (direction) (rate(ojs_autoscaler_scale_total[5m]))", "{{direction}}")],
        ),
    ]
    panels = [_panel(i, title, exprs) for i, (title, exprs) in enumerate(rows, start=1)]
    return {
        "title": f"OJS cluster {ns}/{name}",
        # Grafana uids are at most 40 characters; a digest keeps long names unique.
        "uid": "ojs-" + hashlib.sha256(f"{ns}/{name}".encode()).hexdigest()[:32],
        "tags": ["ojs"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "panels": panels,
    }


def dashboard_config_map(cluster: OJSCluster) -> JSON | None:
    """ConfigMap ``<name>-dashboard`` labelled ``grafana_dashboard: "1"``; None unless requested."""
    monitoring = cluster.spec.monitoring
    if not (monitoring.enabled and monitoring.grafana_dashboard):
        return None
    labels = {**server_labels(cluster), DASHBOARD_LABEL: "1"}
    body = json.dumps(dashboard_json(cluster), indent=2, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(cluster, dashboard_name(cluster), dict(sorted(labels.items()))),
        "data": {f"ojs-{name_of(cluster)}.json": body},
    }


# --- embedded Redis -----------------------------------------------------------------------------------------


def redis_pvc(cluster: OJSCluster) -> JSON | None:
    """PersistentVolumeClaim ``<name>-redis``; None without embedded Redis or without storage."""
    if not embedded_redis_enabled(cluster):
        return None
    redis = cluster.spec.backend.redis
    if redis is None or redis.storage is None:
        return None
    spec: JSON = {
        "accessModes": ["ReadWriteOnce"],
        "resources": canonical_resources({"requests": {"storage": str(redis.storage.size)}}),
    }
    if redis.storage.storage_class_name:
        spec["storageClassName"] = redis.storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(cluster, redis_name(cluster), redis_labels(cluster)),
        "spec": spec,
    }


def redis_deployment(cluster: OJSCluster, *, config_hash: str) -> JSON:
    """Deployment ``<name>-redis``: one Redis with a password, on an emptyDir or the PVC ``<name>-redis``.

    The password reaches Redis through ``$(REDIS_PASSWORD)`` expansion, so the pod spec only names the
    Secret. The cluster's scheduling settings that concern nodes (nodeSelector, tolerations, priority, pull
    secrets) apply; its securityContext, affinity, spreading and service account are the server's and do not.
    ``config_hash`` should cover the password, so a new password restarts Redis with it.
    """
    spec = cluster.spec
    redis = spec.backend.redis
    image = redis.image if redis is not None else DEFAULT_REDIS_IMAGE
    resources = canonical_resources(
        (redis.resources if redis is not None else None) or DEFAULT_REDIS_RESOURCES
    )
    pvc = redis_pvc(cluster)
    data_volume: JSON = (
        {"name": "data", "persistentVolumeClaim": {"claimName": redis_name(cluster)}}
        if pvc is not None
        else {"name": "data", "emptyDir": {}}
    )
    env = [
        env_secret("REDIS_PASSWORD", redis_name(cluster), REDIS_PASSWORD_KEY),
        # redis-cli reads REDISCLI_AUTH: the probe authenticates without a password on its command line.
        env_secret("REDISCLI_AUTH", redis_name(cluster), REDIS_PASSWORD_KEY),
    ]
    container: JSON = {
        "name": REDIS_CONTAINER,
        "image": image,
        "args": [
            "--requirepass",
            "$(REDIS_PASSWORD)",
            "--dir",
            REDIS_DATA_PATH,
            "--appendonly",
            "yes",
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources,
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "ping"]},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "redis"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        },
        "securityContext": container_security_context(None),
        "volumeMounts": [{"name": "data", "mountPath": REDIS_DATA_PATH}],
    }
    pod_security = pod_security_context(
        None, run_as_user=REDIS_UID, run_as_group=REDIS_UID, fs_group=REDIS_UID if pvc is not None else None
    )
    if pvc is not None:
        # Skip the recursive chown of a large volume on every start when ownership is already right.
        pod_security["fsGroupChangePolicy"] = "OnRootMismatch"
    pod_spec: JSON = {
        "automountServiceAccountToken": False,
        "containers": [container],
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "volumes": [data_volume],
    }
    scheduling = pod_scheduling(spec, service_account=False)
    for key in ("imagePullSecrets", "nodeSelector", "priorityClassName", "tolerations"):
        if key in scheduling:
            pod_spec[key] = scheduling[key]
    labels = redis_labels(cluster)
    template = {
        "metadata": pod_template_metadata(None, labels, {CONFIG_HASH_ANNOTATION: config_hash}),
        "spec": dict(sorted(pod_spec.items())),
    }
    # A ReadWriteOnce volume cannot be mounted by the old and the new pod at once (design.md §disruption).
    strategy = _strategy(pvc is not None)
    return _deployment(
        cluster,
        redis_name(cluster),
        labels=labels,
        selector=redis_selector(cluster),
        replicas=1,
        strategy=strategy,
        template=template,
    )


def redis_service(cluster: OJSCluster) -> JSON:
    """Service ``<name>-redis`` on port 6379."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(cluster, redis_name(cluster), redis_labels(cluster)),
        "spec": {
            "type": "ClusterIP",
            "selector": redis_selector(cluster),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
        },
    }
