# syntax=docker/dockerfile:1
# Two stages: build a wheel, then install it into a slim runtime image that runs as a non-root
# numeric user. Pin the base image by digest in release builds for reproducibility.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
EXPOSE 8080 8081 9443
ENTRYPOINT ["ojsctrl"]
