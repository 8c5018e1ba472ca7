# The OLM bundle image: `make bundle-build BUNDLE_IMG=...` (a scratch image holding manifests/ and
# metadata/). The labels repeat metadata/annotations.yaml, as OLM expects.
FROM scratch
LABEL operators.operatorframework.io.bundle.mediatype.v1=registry+v1 \
      operators.operatorframework.io.bundle.manifests.v1=manifests/ \
      operators.operatorframework.io.bundle.metadata.v1=metadata/ \
      operators.operatorframework.io.bundle.package.v1=ojs-operator \
      operators.operatorframework.io.bundle.channels.v1=fast \
      operators.operatorframework.io.bundle.channel.default.v1=fast
COPY manifests /manifests/
COPY metadata /metadata/
