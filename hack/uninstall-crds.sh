#!/usr/bin/env bash
# `make uninstall`: deletes the CRDs in manifests/crds and waits until the API server has removed them
# (and with them every OJSCluster and OJSWorker).
#
# Why not a plain `kubectl delete`: the API server's CRD finalizer can stall. When its first list of
# the CRD's objects meets the watch cache still starting ("storage is (re)initializing", a 429), it
# records InstanceDeletionFailed and retries; if that retry reads a stale copy of the CRD its status
# write conflicts, and it returns without error, counting on an update event. The only updates left
# are its own changes of the Terminating condition, which it ignores by design, so the CRD waits for
# the informer's periodic resync (minutes). A metadata change of the terminating CRD is an update the
# finalizer does not ignore, so this script annotates a CRD that is still there after a while. That
# changes nothing else: the finalizer still deletes every object of the kind before the CRD goes.
#
# Usage: uninstall-crds.sh KUBECTL [DIR]   (DIR defaults to manifests/crds)
# Env:   UNINSTALL_TIMEOUT (seconds, default 300), UNINSTALL_NUDGE_AFTER (seconds per wait, default 20)
set -euo pipefail

kubectl="${1:?usage: uninstall-crds.sh KUBECTL [DIR]}"
dir="${2:-manifests/crds}"
timeout="${UNINSTALL_TIMEOUT:-300}"
step="${UNINSTALL_NUDGE_AFTER:-20}"

"$kubectl" delete --ignore-not-found --wait=false -f "$dir"

deadline=$((SECONDS + timeout))
while true; do
  if "$kubectl" wait --for=delete --timeout="${step}s" -f "$dir" >/dev/null 2>&1; then
    echo "uninstall: CRDs removed"
    exit 0
  fi
  # The CRDs still present, one per file: name, deletionTimestamp, Terminating condition's reason and message.
  left=""
  for f in "$dir"/*.yaml; do
    row="$("$kubectl" get -f "$f" --ignore-not-found -o \
      jsonpath='{.metadata.name}{"|"}{.metadata.deletionTimestamp}{"|"}{.status.conditions[?(@.type=="Terminating")].reason}{"|"}{.status.conditions[?(@.type=="Terminating")].message}')"
    if [[ -n "$row" ]]; then left+="$row"$'\n'; fi
  done
  if [[ -z "$left" ]]; then
    echo "uninstall: CRDs removed"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    echo "uninstall: CRDs still present after ${timeout}s:" >&2
    printf '%s' "$left" >&2
    exit 1
  fi
  while IFS="|" read -r name deleting reason message; do
    [[ -n "$name" ]] || continue
    if [[ -z "$deleting" ]]; then
      echo "uninstall: $name exists and is not being deleted (created again meanwhile?)" >&2
      exit 1
    fi
    echo "uninstall: $name is still terminating (${reason:-no reason yet}${message:+: $message}); asking the API server to look again"
    "$kubectl" annotate --overwrite crd "$name" "ojs.openjobspec.dev/uninstall-requested=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >/dev/null || true
  done <<<"$left"
done
