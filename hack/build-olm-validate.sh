#!/usr/bin/env bash
# Builds hack/olm-validate (operator-framework/api's bundle validators, pinned by hack/versions.env and
# hack/olm-validate/go.mod) into $OJSCTRL_CACHE/tools/olm-validate-<version>-<source hash>/olm-validate.
# A second run is a no-op; a change of the source or the pin builds a new one next to it.
#
#   bash hack/build-olm-validate.sh           # build when missing, print the binary's path
#   bash hack/build-olm-validate.sh --print   # only print the path (it may not exist yet)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091
source "$here/versions.env"
src="$here/olm-validate"
cache="${OJSCTRL_CACHE:-$HOME/.cache/ojsctrl}"
hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)"
out="$cache/tools/olm-validate-${OPERATOR_FRAMEWORK_API_VERSION}-$hash/olm-validate"

if [[ "${1:-}" == "--print" ]]; then
  echo "$out"
  exit 0
fi
if [[ -x "$out" ]]; then
  echo "$out"
  exit 0
fi
grep -q "github.com/operator-framework/api ${OPERATOR_FRAMEWORK_API_VERSION}\$" "$src/go.mod" || {
  echo "olm-validate: hack/olm-validate/go.mod does not require operator-framework/api ${OPERATOR_FRAMEWORK_API_VERSION} (hack/versions.env)" >&2
  exit 1
}
command -v go >/dev/null || { echo "olm-validate: the go command is required" >&2; exit 1; }
echo "olm-validate: building with operator-framework/api ${OPERATOR_FRAMEWORK_API_VERSION} (about a minute on a fresh module cache)" >&2
mkdir -p "$(dirname "$out")"
# -mod=mod with the committed go.sum: the module proxy serves exactly the pinned, checksummed versions.
(cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "$out"
