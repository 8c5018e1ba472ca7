#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kwok and helm) from the Go module proxy, pinned by
# hack/versions.env, into $OJSCTRL_CACHE/bin/<set>/. A second run is a no-op.
#
# Kubernetes pins its staging modules (k8s.io/api, ...) at v0.0.0 with local
# replace directives that Go ignores in a dependency, so each tool is built
# from a throwaway module that replaces every staging module with its published
# release. The list is read from the release's own go.mod.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091
source "$here/versions.env"

cache="${OJSCTRL_CACHE:-$HOME/.cache/ojsctrl}"
set_name="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_helm-${HELM_VERSION}"
bin="$cache/bin/$set_name"
build="$cache/build"
outputs=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwok-stages helm
         crds/monitoring.coreos.com_servicemonitors.yaml)
all_present() {
  for o in "${outputs[@]}"; do [[ -e "$bin/$o" ]] || return 1; done
}

if [[ -n "${OJSCTRL_CONTROLPLANE_BIN:-}" ]]; then
  echo "controlplane: using binaries from \$OJSCTRL_CONTROLPLANE_BIN=$OJSCTRL_CONTROLPLANE_BIN"
  exit 0
fi
if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$bin"
  exit 0
fi
if all_present; then
  echo "controlplane: binaries up to date in $bin"
  exit 0
fi

command -v go >/dev/null || { echo "controlplane: the go command is required (Go >= 1.26)" >&2; exit 1; }
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
mkdir -p "$bin" "$build"

step() { echo "controlplane: [$(date +%H:%M:%S)] $*"; }
started=$(date +%s)

k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
staging_version="v0.${KUBERNETES_VERSION#v1.}"

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=0
  for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || missing=1; done
  [[ $missing == 0 ]] && { step "kubernetes $KUBERNETES_VERSION already built"; return; }

  local work="$build/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$work"
  step "kubernetes $KUBERNETES_VERSION: fetching the release's go.mod"
  local gomod
  gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local replaces
  replaces=$(python3 - "$gomod" "$staging_version" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", text, re.M)))
if not mods:
    sys.exit("no staging replace directives found in " + sys.argv[1])
for m in mods:
    print(f"replace {m} => {m} {sys.argv[2]}")
PY
)
  step "kubernetes: $(echo "$replaces" | wc -l) staging modules replaced by $staging_version"
  local goline
  goline=$(grep -m1 -E '^go [0-9.]+' "$gomod" | awk '{print $2}')
  {
    echo "module ojsctrl.local/build/kubernetes"
    echo
    echo "go $goline"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "$replaces"
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools
GO
  step "kubernetes: resolving dependencies (go get)"
  (cd "$work" && go get \
      "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES_VERSION")
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  step "kubernetes: compiling ${want[*]} (cold: 10-25 minutes on 2 cores)"
  (cd "$work" && go build -trimpath -tags "selinux,notest,grpcnotrace" -ldflags "-s -w $ld" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl)
  step "kubernetes: done"
}

build_etcd() {
  [[ -x "$bin/etcd" ]] && { step "etcd $ETCD_VERSION already built"; return; }
  local work="$build/etcd-$ETCD_VERSION"
  mkdir -p "$work"
  printf 'module ojsctrl.local/build/etcd\n\ngo 1.24\n' > "$work/go.mod"
  step "etcd $ETCD_VERSION: resolving dependencies"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  step "etcd: compiling"
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  step "etcd: done"
}

build_kwok() {
  if [[ -x "$bin/kwok" && -d "$bin/kwok-stages" ]]; then step "kwok $KWOK_VERSION already built"; return; fi
  local work="$build/kwok-$KWOK_VERSION"
  mkdir -p "$work"
  step "kwok $KWOK_VERSION: go install"
  (cd "$work" && GOBIN="$bin" GOFLAGS= go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
  local moddir
  moddir=$(cd "$work" && GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$bin/kwok-stages"
  mkdir -p "$bin/kwok-stages"
  cp -r "$moddir/kustomize/stage/." "$bin/kwok-stages/"
  chmod -R u+w "$bin/kwok-stages"
  step "kwok: done (stages copied from the module)"
}

build_helm() {
  [[ -x "$bin/helm" ]] && { step "helm $HELM_VERSION already built"; return; }
  local work="$build/helm-$HELM_VERSION"
  mkdir -p "$work"
  step "helm $HELM_VERSION: go install"
  (cd "$work" && GOBIN="$bin" GOFLAGS= go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  step "helm: done"
}

fetch_servicemonitor_crd() {
  local dest="$bin/crds/monitoring.coreos.com_servicemonitors.yaml"
  [[ -f "$dest" ]] && { step "ServiceMonitor CRD already fetched"; return; }
  local work="$build/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
  mkdir -p "$work" "$bin/crds"
  step "ServiceMonitor CRD from prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
  local moddir
  moddir=$(cd "$work" && GOFLAGS= go mod download -json \
      "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if "Error" in d else print(d["Dir"])')
  cp "$moddir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$dest"
  chmod u+w "$dest"
}

build_etcd
build_kwok
build_kubernetes
build_helm
fetch_servicemonitor_crd
step "all binaries in $bin ($(( $(date +%s) - started ))s)"
