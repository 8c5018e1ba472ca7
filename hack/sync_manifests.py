"""Copy the generated manifests to the places that ship them.

Kustomize reads no file outside a kustomization's folder, a Helm chart and an OLM bundle carry their own
files, so the generated CRDs (manifests/crds) and webhook configuration (manifests/webhook) are copied:

    manifests/crds/*.yaml                                   -> deploy/crds/, deploy/helm/ojs-operator/crds/,
                                                               deploy/olm/manifests/ (without the `---`
                                                               line: one object per bundle file)
    manifests/webhook/validating-webhook-configuration.yaml -> deploy/webhook/
    manifests/rbac/role.yaml (ClusterRole)                  -> deploy/namespaced/manager_role.yaml (the
                                                               same rules as a Role in the watched namespace)

`python hack/sync_manifests.py` writes the copies; `--check` only reports stale ones (exit 1).
`make manifests` runs it after regenerating the sources; a unit test runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLM_TARGET = "deploy/olm/manifests"
CRD_TARGETS = ("deploy/crds", "deploy/helm/ojs-operator/crds", OLM_TARGET)
WEBHOOK_SOURCE = "manifests/webhook/validating-webhook-configuration.yaml"
WEBHOOK_TARGET = "deploy/webhook/validating-webhook-configuration.yaml"
ROLE_SOURCE = "manifests/rbac/role.yaml"
ROLE_TARGET = "deploy/namespaced/manager_role.yaml"
# The namespace deploy/namespaced watches (its kustomization's replacements carry it everywhere else).
WATCHED_NAMESPACE = "ojs-workloads"
ROLE_HEADER = (
    "# Generated from manifests/rbac/role.yaml by `python hack/sync_manifests.py`; do not edit.\n"
    "# The same rules as the cluster-wide ClusterRole, granted only in the watched namespace.\n"
)


def bundle_manifest(data: bytes) -> bytes:
    """A CRD as an OLM bundle file: one object and no document separator. operator-framework/api's
    bundle loader (what `operator-sdk bundle validate` and hack/olm-validate run) decodes a file that
    starts with `---` after a comment as an empty object and then misses the CRD."""
    lines = data.decode().splitlines(keepends=True)
    body = [line for line in lines if line.rstrip("\n") != "---"]
    if len(lines) - len(body) > 1:
        raise ValueError("a bundle manifest holds one object; this CRD file has several documents")
    return "".join(body).encode()


def namespaced_role(cluster_role: str, namespace: str = WATCHED_NAMESPACE) -> str:
    """The ClusterRole's text (comments kept) as a Role in `namespace`."""
    out = []
    for raw in cluster_role.splitlines():
        line = "kind: Role" if raw == "kind: ClusterRole" else raw
        out.append(line)
        if line.startswith("  name: ojs-operator-manager-role"):
            out.append(f"  namespace: {namespace}")
    if "kind: Role" not in out or f"  namespace: {namespace}" not in out:
        raise ValueError(f"{ROLE_SOURCE} is not the manager ClusterRole this script expects")
    return ROLE_HEADER + "\n".join(out) + "\n"


def copies(repo: Path = REPO) -> dict[Path, bytes]:
    """Every copy's path and the content it must have."""
    out: dict[Path, bytes] = {}
    for crd in sorted((repo / "manifests" / "crds").glob("*.yaml")):
        for target in CRD_TARGETS:
            data = crd.read_bytes()
            out[repo / target / crd.name] = bundle_manifest(data) if target == OLM_TARGET else data
    out[repo / WEBHOOK_TARGET] = (repo / WEBHOOK_SOURCE).read_bytes()
    out[repo / ROLE_TARGET] = namespaced_role((repo / ROLE_SOURCE).read_text()).encode()
    return out


def stale(repo: Path = REPO) -> list[str]:
    """Copies that are missing or differ from their source, plus CRD copies whose source is gone."""
    wanted = copies(repo)
    out = [str(p.relative_to(repo)) for p, data in wanted.items() if not p.exists() or p.read_bytes() != data]
    for target in CRD_TARGETS:
        for path in (repo / target).glob("*_*.yaml"):
            if path.name.startswith("ojs.openjobspec.dev_") and path not in wanted:
                out.append(f"{path.relative_to(repo)} (no longer generated)")
    return sorted(out)


def write(repo: Path = REPO) -> list[str]:
    """Write the stale copies; returns what was written or removed."""
    changed = stale(repo)
    wanted = copies(repo)
    for path, data in wanted.items():
        if not path.exists() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for target in CRD_TARGETS:
        for path in (repo / target).glob("ojs.openjobspec.dev_*.yaml"):
            if path not in wanted:
                path.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale copies, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        out = stale()
        for line in out:
            print(f"stale: {line} (run `make manifests`)", file=sys.stderr)
        return 1 if out else 0
    for line in write():
        print(f"updated {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
