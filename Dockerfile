# syntax=docker/dockerfile:1
# The operator's image: `make docker-build IMG=...`.
#
# Two stages. The first builds the project's wheel and installs it with its dependencies into /app
# (a plain folder, no virtualenv: the runtime image's Python finds it through PYTHONPATH). The second
# is distroless: CPython 3.11 and glibc only, no shell, no package manager, running as the numeric
# non-root user 65532. Both stages use Python 3.11 so the compiled wheels (pydantic-core, orjson)
# match the runtime's ABI.
#
# Reproducibility: pin both base images by digest in release builds (BUILD_IMAGE / RUNTIME_IMAGE
# build arguments), and SOURCE_DATE_EPOCH is honoured by pip's wheel builds.
ARG BUILD_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY src ./src
# Dependencies only from the hashed lock (`make lock`): nothing is resolved at image build time.
RUN pip install --require-hashes --no-deps --target /app --no-compile -r requirements.lock \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && pip install --no-deps --target /app --no-compile /wheels/*.whl \
 && python -m compileall -q -j 0 --invalidation-mode unchecked-hash /app

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="ojs-operator" \
      org.opencontainers.image.description="Kubernetes operator for Open Job Spec job servers and workers" \
      org.opencontainers.image.source="https://github.com/openjobspec/ojs-k8s-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /app /app
ENV PYTHONPATH=/app PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
# metrics, health probes, admission webhook
EXPOSE 8080 8081 9443
# The `ojsctrl` console script's function (ojsctrl.cli:main), started without a shell.
ENTRYPOINT ["/usr/bin/python3", "-m", "ojsctrl"]
