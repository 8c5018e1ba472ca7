#!/usr/bin/env bash
# Installs the tools some tests use beyond the control plane:
#   promtool (Debian's `prometheus` package, which the Go module proxy cannot provide): checks the
#   dashboards' and alerts' PromQL, runs the alerts' `promtool test rules`, and the prometheus server
#   that scrapes the operator in an e2e test;
#   olm-validate (hack/build-olm-validate.sh, from the Go module proxy): operator-framework/api's
#   validators for the OLM bundle, cached under ~/.cache/ojsctrl/tools.
# Idempotent: does nothing when both are there. Needs root (apt-get) for promtool otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
echo "install-deps: olm-validate at $(bash "$here/build-olm-validate.sh")"

if command -v promtool >/dev/null 2>&1; then
  echo "install-deps: promtool present ($(promtool --version 2>&1 | head -n1))"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: promtool is missing and apt-get is not available; install Prometheus's promtool yourself" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo for apt-get" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing Debian's prometheus package (for promtool)"
"${sudo[@]}" apt-get update -qq
# --no-install-recommends: promtool and the server only, not the exporters and web assets' extras.
# RUNLEVEL=1: invoke-rc.d does not start the packaged service; tests start their own prometheus.
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 "${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus
command -v promtool >/dev/null 2>&1 || { echo "install-deps: prometheus installed but promtool not on PATH" >&2; exit 1; }
echo "install-deps: $(promtool --version 2>&1 | head -n1)"
