"""What each OJS backend server reads and serves: the one place these facts live (design.md §backends,
§images, §exposure).

Every row cites the files of the backend's repository (github.com/openjobspec/ojs-backend-<type>, at the
pinned release tag) it was read from. The builders take env names, images, ports and public paths from here;
the validation rules take the operator-managed env names from here; nothing else in the operator spells them.

Common to the six servers (each repository's ``.env.example`` and ``docker/Dockerfile``): HTTP on
``OJS_PORT`` (8080), gRPC on ``OJS_GRPC_PORT`` (9090, no authentication: ``internal/grpc/server.go``
registers no interceptor), the API key in ``OJS_API_KEY`` checked as a bearer token, and
``OJS_ALLOW_INSECURE_NO_AUTH`` to run without one. ``GET /ojs/v1/health`` answers 503 while the backend is
down and is public everywhere (the images' HEALTHCHECK uses it); ``/healthz`` and ``/readyz`` exist on some
backends only, so nothing probes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- common to every backend --------------------------------------------------------------------------------

HTTP_PORT = 8080
GRPC_PORT = 9090
HEALTH_PATH = "/ojs/v1/health"
METRICS_PATH = "/metrics"
PORT_ENV = "OJS_PORT"
GRPC_PORT_ENV = "OJS_GRPC_PORT"
API_KEY_ENV = "OJS_API_KEY"
INSECURE_ENV = "OJS_ALLOW_INSECURE_NO_AUTH"
# The env names the operator sets on every server container, whatever the backend.
COMMON_ENV: tuple[str, ...] = (PORT_ENV, GRPC_PORT_ENV, API_KEY_ENV, INSECURE_ENV)

IMAGE_REPOSITORY = "ghcr.io/openjobspec/ojs-backend-{backend}"
SOURCE_REPOSITORY = "https://github.com/openjobspec/ojs-backend-{backend}"
# --server-image placeholders: the backend type, and the tag pinned for it below.
BACKEND_PLACEHOLDER = "{backend}"
TAG_PLACEHOLDER = "{tag}"


@dataclass(frozen=True)
class BackendContract:
    """How one backend's server is configured and what it serves without the API key."""

    type: str
    # Newest release tag of the backend's repository: the default image is IMAGE_REPOSITORY:tag.
    tag: str
    # The env var the connection URL (backend.url / urlSecretRef / embedded) goes to; None: no URL.
    url_env: str | None
    # The env var the state store URL (backend.stateStore) goes to; None: the backend has none.
    state_store_env: str | None
    # Every backend-specific env name the operator may set (operator-managed: a user entry replacing one
    # gets an admission warning).
    operator_env: tuple[str, ...]
    # Paths the server answers without the API key when one is set.
    public_paths: frozenset[str]
    # Whether /healthz and /readyz are routed at all (informational: the operator probes HEALTH_PATH).
    health_routes: bool
    # Files of the repository, at ``tag``, each fact above was read from.
    sources: tuple[str, ...]

    @property
    def metrics_need_key(self) -> bool:
        """Whether scraping /metrics needs the API key (a ServiceMonitor then needs bearer authorization)."""
        return METRICS_PATH not in self.public_paths

    @property
    def default_image(self) -> str:
        """The pinned default image of this backend's server."""
        return f"{IMAGE_REPOSITORY.format(backend=self.type)}:{self.tag}"

    @property
    def repository(self) -> str:
        """The backend's source repository."""
        return SOURCE_REPOSITORY.format(backend=self.type)


SQS_ENV_REGION = "AWS_REGION"
SQS_ENV_TABLE = "DYNAMODB_TABLE"
SQS_ENV_PREFIX = "SQS_QUEUE_PREFIX"
SQS_ENV_FIFO = "SQS_USE_FIFO"
SQS_ENV_ENDPOINT = "AWS_ENDPOINT_URL"

_PUBLIC = frozenset({METRICS_PATH, HEALTH_PATH})

CONTRACTS: dict[str, BackendContract] = {
    c.type: c
    for c in (
        BackendContract(
            type="redis",
            tag="v0.3.0",
            url_env="REDIS_URL",
            state_store_env=None,
            operator_env=("REDIS_URL",),
            # The skip list names /healthz and /readyz too, but no route serves them.
            public_paths=_PUBLIC,
            health_routes=False,
            sources=(".env.example", "internal/server/config.go", "internal/server/server.go"),
        ),
        BackendContract(
            type="postgres",
            tag="v0.4.1",
            # Required: cmd/ojs-server/main.go exits when DATABASE_URL is empty.
            url_env="DATABASE_URL",
            state_store_env=None,
            operator_env=("DATABASE_URL",),
            public_paths=frozenset({METRICS_PATH, HEALTH_PATH, "/healthz", "/readyz"}),
            health_routes=True,
            sources=(
                ".env.example",
                "internal/server/config.go",
                "internal/server/server.go",
                "cmd/ojs-server/main.go",
            ),
        ),
        BackendContract(
            type="nats",
            tag="v0.3.0",
            url_env="NATS_URL",
            state_store_env=None,
            operator_env=("NATS_URL",),
            public_paths=_PUBLIC,
            health_routes=False,
            sources=(".env.example", "internal/server/config.go", "internal/server/server.go"),
        ),
        BackendContract(
            type="kafka",
            tag="v0.4.1",
            # A comma-separated broker list; Redis is the state store (main.go exits when it is unreachable).
            url_env="KAFKA_BROKERS",
            state_store_env="REDIS_URL",
            operator_env=("KAFKA_BROKERS", "REDIS_URL"),
            public_paths=_PUBLIC,
            health_routes=True,
            sources=(
                ".env.example",
                "internal/server/config.go",
                "internal/server/server.go",
                "cmd/ojs-server/main.go",
            ),
        ),
        BackendContract(
            type="sqs",
            tag="v0.4.1",
            # No URL: region, DynamoDB table (created or verified at start), queue prefix and FIFO; an
            # endpoint (LocalStack) forces static test credentials (cmd/ojs-server/main.go buildAWSConfig).
            url_env=None,
            state_store_env=None,
            operator_env=(SQS_ENV_REGION, SQS_ENV_TABLE, SQS_ENV_PREFIX, SQS_ENV_FIFO, SQS_ENV_ENDPOINT),
            public_paths=_PUBLIC,
            health_routes=True,
            sources=(
                ".env.example",
                "internal/server/config.go",
                "internal/server/server.go",
                "cmd/ojs-server/main.go",
            ),
        ),
        BackendContract(
            type="lite",
            tag="v0.4.1",
            # State in process memory; /metrics sits behind the API key (only the health path is skipped).
            url_env=None,
            state_store_env=None,
            operator_env=(),
            public_paths=frozenset({HEALTH_PATH}),
            health_routes=True,
            sources=(".env.example", "internal/server/config.go", "internal/server/server.go"),
        ),
    )
}


def contract(backend: str) -> BackendContract:
    """The contract of a backend type; KeyError for an unknown type (the API's enum rules them out)."""
    return CONTRACTS[backend]


def operator_env_names(backend: str) -> frozenset[str]:
    """Every env name the operator manages on a server of this backend type."""
    extra = CONTRACTS[backend].operator_env if backend in CONTRACTS else ()
    return frozenset((*COMMON_ENV, *extra))


_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def check_image_template(template: str) -> str:
    """``template`` when it is a valid --server-image value, else ValueError saying what is wrong.

    The template names one image per backend: it must contain ``{backend}`` and may contain ``{tag}`` (the
    tag pinned for that backend), and nothing else in braces; no whitespace.
    """
    if not template or any(ch.isspace() for ch in template):
        raise ValueError(f"must be a non-empty image reference without whitespace, got {template!r}")
    unknown = sorted({p for p in _PLACEHOLDER.findall(template)} - {BACKEND_PLACEHOLDER, TAG_PLACEHOLDER})
    if unknown:
        raise ValueError(
            f"unknown placeholder {', '.join(unknown)} in {template!r}: only {{backend}} and {{tag}} exist"
        )
    if BACKEND_PLACEHOLDER not in template:
        raise ValueError(
            f"{template!r} lacks the placeholder {{backend}}: every backend has its own server image, e.g. "
            "registry.example/openjobspec/ojs-backend-{backend}:{tag}"
        )
    rendered = render_image(template, "redis")
    if "{" in rendered or "}" in rendered:
        raise ValueError(f"unbalanced braces in {template!r}")
    return template


def render_image(template: str, backend: str) -> str:
    """The image a --server-image template names for one backend type."""
    tag = CONTRACTS[backend].tag if backend in CONTRACTS else ""
    return template.replace(BACKEND_PLACEHOLDER, backend).replace(TAG_PLACEHOLDER, tag)


def server_image(backend: str, template: str | None = None) -> str:
    """The default server image of a backend: the --server-image template's, else the pinned table's."""
    if template:
        return render_image(template, backend)
    return CONTRACTS[backend].default_image
