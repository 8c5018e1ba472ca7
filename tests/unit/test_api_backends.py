"""The per-backend contract table: what each real OJS server reads and serves, and the image template."""

from __future__ import annotations

import pytest

from ojsctrl.api.backends import (
    CONTRACTS,
    GRPC_PORT,
    HEALTH_PATH,
    HTTP_PORT,
    METRICS_PATH,
    check_image_template,
    contract,
    operator_env_names,
    render_image,
    server_image,
)
from ojsctrl.api.cluster import BACKEND_TYPES


def test_every_backend_type_has_exactly_one_row() -> None:
    assert tuple(CONTRACTS) == BACKEND_TYPES
    for backend, row in CONTRACTS.items():
        assert row.type == backend
        assert row.sources, backend  # every row cites where its facts come from
        assert row.tag.startswith("v")
        assert row.repository == f"https://github.com/openjobspec/ojs-backend-{backend}"


# (backend, connection env, state-store env, /metrics needs the key, /healthz+/readyz routed, image)
ROWS = [
    ("redis", "REDIS_URL", None, False, False, "ghcr.io/openjobspec/ojs-backend-redis:v0.3.0"),
    ("postgres", "DATABASE_URL", None, False, True, "ghcr.io/openjobspec/ojs-backend-postgres:v0.4.1"),
    ("nats", "NATS_URL", None, False, False, "ghcr.io/openjobspec/ojs-backend-nats:v0.3.0"),
    ("kafka", "KAFKA_BROKERS", "REDIS_URL", False, True, "ghcr.io/openjobspec/ojs-backend-kafka:v0.4.1"),
    ("sqs", None, None, False, True, "ghcr.io/openjobspec/ojs-backend-sqs:v0.4.1"),
    ("lite", None, None, True, True, "ghcr.io/openjobspec/ojs-backend-lite:v0.4.1"),
]


@pytest.mark.parametrize(("backend", "url_env", "store_env", "metrics_key", "routed", "image"), ROWS)
def test_contract_rows(
    backend: str, url_env: str | None, store_env: str | None, metrics_key: bool, routed: bool, image: str
) -> None:
    row = contract(backend)
    assert (row.url_env, row.state_store_env) == (url_env, store_env)
    assert row.metrics_need_key is metrics_key
    assert row.health_routes is routed
    assert row.default_image == image == server_image(backend)
    assert HEALTH_PATH in row.public_paths  # probes and the images' HEALTHCHECK need no key anywhere
    assert (METRICS_PATH in row.public_paths) is not metrics_key


def test_ports_and_paths() -> None:
    assert (HTTP_PORT, GRPC_PORT, HEALTH_PATH, METRICS_PATH) == (8080, 9090, "/ojs/v1/health", "/metrics")


def test_no_backend_reads_sqs_queue_url() -> None:
    every = set().union(*(operator_env_names(t) for t in CONTRACTS))
    assert "SQS_QUEUE_URL" not in every
    assert {"AWS_REGION", "DYNAMODB_TABLE", "SQS_QUEUE_PREFIX", "SQS_USE_FIFO", "AWS_ENDPOINT_URL"} <= (
        operator_env_names("sqs")
    )


def test_operator_env_names() -> None:
    common = {"OJS_PORT", "OJS_GRPC_PORT", "OJS_API_KEY", "OJS_ALLOW_INSECURE_NO_AUTH"}
    assert operator_env_names("lite") == common
    assert operator_env_names("kafka") == common | {"KAFKA_BROKERS", "REDIS_URL"}
    assert operator_env_names("unknown") == common


@pytest.mark.parametrize(
    ("template", "backend", "image"),
    [
        (
            "mirror.example/openjobspec/ojs-backend-{backend}:{tag}",
            "kafka",
            "mirror.example/openjobspec/ojs-backend-kafka:v0.4.1",
        ),
        ("mirror.example/ojs-{backend}:v9", "lite", "mirror.example/ojs-lite:v9"),
        ("localhost:5000/{backend}@sha256:" + "a" * 64, "nats", "localhost:5000/nats@sha256:" + "a" * 64),
    ],
)
def test_image_templates(template: str, backend: str, image: str) -> None:
    assert check_image_template(template) == template
    assert render_image(template, backend) == image == server_image(backend, template)


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("ghcr.io/openjobspec/ojs-server:v0.5.0", "lacks the placeholder {backend}"),
        ("x/{backend}:{version}", "unknown placeholder {version}"),
        ("x/{Backend}", "unknown placeholder {Backend}"),
        ("x/{backend}: v1", "whitespace"),
        ("", "non-empty"),
        ("x/{backend}:{tag", "unbalanced braces"),
        ("x/{backend}}", "unbalanced braces"),
    ],
)
def test_bad_image_templates_say_why(template: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        check_image_template(template)
    assert says in str(info.value)


def test_the_backends_doc_shows_the_pinned_images() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text(encoding="utf-8")
    for row in CONTRACTS.values():
        assert f"`{row.default_image}`" in doc, row.type
