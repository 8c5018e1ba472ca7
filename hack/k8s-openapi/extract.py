#!/usr/bin/env python3
"""Extract the Kubernetes sub-schemas the OJS CRDs embed, in structural form.

The CRDs embed real Kubernetes types (affinity, tolerations, env, resources, ...) so that nothing a user
writes is pruned by the API server. Their schemas come from the OpenAPI v3 document shipped in the
``k8s.io/kubernetes`` Go module at the version pinned in ``hack/versions.env``. This script turns the needed
definitions into structural schemas (no ``$ref``, every node typed, int-or-string marked) and writes them to
``src/ojsctrl/api/k8s_schemas.json``, which ``ojsctrl.api.crdgen`` reads, so CRD generation is offline and
reproducible.

Usage::

    python hack/k8s-openapi/extract.py                 # downloads the module with `go mod download`
    python hack/k8s-openapi/extract.py --spec FILE     # uses an already available api__v1_openapi.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "src" / "ojsctrl" / "api" / "k8s_schemas.json"
SPEC_IN_MODULE = "api/openapi-spec/v3/api__v1_openapi.json"

CORE = "io.k8s.api.core.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"

# Fields the CRDs embed, as "<Definition>.<property>": the property schema carries the list/map markers and
# the description the Kubernetes API itself uses for the field.
FIELDS = [
    "Container.args",
    "Container.command",
    "Container.env",
    "Container.envFrom",
    "Container.resources",
    "ObjectMeta.annotations",
    "ObjectMeta.labels",
    "PersistentVolumeClaimSpec.storageClassName",
    "PodSecurityContext.fsGroup",
    "PodSecurityContext.runAsGroup",
    "PodSecurityContext.runAsNonRoot",
    "PodSecurityContext.runAsUser",
    "PodSpec.affinity",
    "PodSpec.imagePullSecrets",
    "PodSpec.nodeSelector",
    "PodSpec.priorityClassName",
    "PodSpec.serviceAccountName",
    "PodSpec.tolerations",
    "PodSpec.topologySpreadConstraints",
    "SecurityContext.readOnlyRootFilesystem",
]
# Whole definitions the CRDs embed.
DEFINITIONS = {
    "Condition": META + "Condition",
    "Quantity": QUANTITY,
}

# The same pattern controller-gen emits for resource.Quantity; it applies to the string form only.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
    r"(\.[0-9]+))))?$"
)
# Keys a CRD's JSONSchemaProps accepts and that carry meaning for these types. Anything else (patch
# strategies, unions, discriminators, GVK markers) is dropped: apiextensions would reject or silently drop it.
KEEP_KEYS = {
    "additionalProperties",
    "default",
    "description",
    "format",
    "items",
    "maxItems",
    "maxLength",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "pattern",
    "properties",
    "required",
    "type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
}
# Formats the API server understands for CRDs; Kubernetes-only formats such as "int-or-string" are
# meaningless.
KEEP_FORMATS = {"int32", "int64", "double", "float", "byte", "date-time", "date"}


class Converter:
    """Inline ``$ref`` and rewrite one OpenAPI v3 schema into structural CRD form."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas

    def ref(self, ref: str, stack: tuple[str, ...]) -> dict[str, Any]:
        """The structural schema a ``$ref`` points to (int-or-string types get the CRD marker)."""
        name = ref.rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive schema {name} cannot be made structural")
        if name == QUANTITY:
            return {
                "anyOf": [{"type": "integer"}, {"type": "string"}],
                "pattern": QUANTITY_PATTERN,
                "x-kubernetes-int-or-string": True,
            }
        if name == INT_OR_STRING:
            return {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
        return self.convert(self.schemas[name], (*stack, name))

    def convert(self, node: dict[str, Any], stack: tuple[str, ...] = ()) -> dict[str, Any]:
        """A structural copy of ``node``; ``stack`` holds the definitions being inlined (cycle guard)."""
        out: dict[str, Any] = {}
        if "$ref" in node:
            out.update(self.ref(node["$ref"], stack))
        for part in node.get("allOf", []):
            # Kubernetes wraps a $ref in allOf only to give the property its own description/default.
            out.update(self.convert(part, stack))
        for key, value in node.items():
            if key not in KEEP_KEYS:
                continue
            if key == "properties":
                out[key] = {k: self.convert(v, stack) for k, v in sorted(value.items())}
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                out[key] = self.convert(value, stack)
            elif key == "format":
                if value in KEEP_FORMATS:
                    out[key] = value
            else:
                out[key] = value
        if "properties" in out and "type" not in out:
            out["type"] = "object"
        return out


def strip_defaults(schema: dict[str, Any]) -> None:
    """Drop every default except those apiextensions requires.

    Kept defaults would make the API server materialise ``""`` and ``{}`` into users' objects. The one
    exception is a key of an ``x-kubernetes-list-type: map`` list that is not required: apiextensions rejects
    the CRD unless such a key has a default.
    """
    needed: set[int] = set()
    _mark_list_map_keys(schema, needed)
    _strip(schema, needed)


def _mark_list_map_keys(schema: dict[str, Any], needed: set[int]) -> None:
    if schema.get("x-kubernetes-list-type") == "map":
        items = schema.get("items") or {}
        required = set(items.get("required", []))
        for key in schema.get("x-kubernetes-list-map-keys", []):
            prop = items.get("properties", {}).get(key)
            if prop is not None and key not in required:
                prop.setdefault("default", "" if prop.get("type") == "string" else 0)
                needed.add(id(prop))
    for child in _children(schema):
        _mark_list_map_keys(child, needed)


def _strip(schema: dict[str, Any], needed: set[int]) -> None:
    if id(schema) not in needed:
        schema.pop("default", None)
    for child in _children(schema):
        _strip(child, needed)


def _children(schema: dict[str, Any]) -> list[dict[str, Any]]:
    out = list((schema.get("properties") or {}).values())
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out.append(schema[key])
    return out


def locate_spec(version: str) -> Path:
    """Download (or find in the module cache) k8s.io/kubernetes and return its core/v1 OpenAPI v3 file."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["go", "mod", "init", "extract"], cwd=tmp, check=True, capture_output=True)
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
            cwd=tmp,
            check=True,
            capture_output=True,
            env=env,
            text=True,
        )
    info = json.loads(result.stdout)
    return Path(info["Dir"]) / SPEC_IN_MODULE


def pinned_version() -> str:
    """The Kubernetes version the project pins in hack/versions.env."""
    for line in (ROOT / "hack" / "versions.env").read_text().splitlines():
        if line.startswith("KUBERNETES_VERSION="):
            return line.split("=", 1)[1].strip()
    raise SystemExit("KUBERNETES_VERSION not found in hack/versions.env")


def extract(spec: dict[str, Any], version: str) -> dict[str, Any]:
    """Build the document written to k8s_schemas.json from a parsed OpenAPI v3 document."""
    schemas = spec["components"]["schemas"]
    conv = Converter(schemas)
    fields: dict[str, Any] = {}
    for ref in FIELDS:
        definition, prop = ref.split(".")
        full = (META if definition == "ObjectMeta" else CORE) + definition
        fields[ref] = conv.convert(schemas[full]["properties"][prop], (full,))
    definitions = {
        name: conv.convert({"$ref": "#/components/schemas/" + full}) for name, full in DEFINITIONS.items()
    }
    for schema in [*fields.values(), *definitions.values()]:
        strip_defaults(schema)
    return {
        "source": f"k8s.io/kubernetes@{version} {SPEC_IN_MODULE}",
        "fields": fields,
        "definitions": definitions,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", type=Path, help="path to api__v1_openapi.json (default: go mod download)")
    parser.add_argument(
        "--version", default=None, help="k8s.io/kubernetes version (default: hack/versions.env)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    version = args.version or pinned_version()
    spec_path = args.spec or locate_spec(version)
    doc = extract(json.loads(spec_path.read_text()), version)
    args.out.write_text(json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) from {spec_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
