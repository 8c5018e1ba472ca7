"""Write docs/crd-reference.md from the API models and the CRDs generated from them.

The pydantic models in ``ojsctrl.api`` decide which fields are documented (OJS fields are expanded,
embedded Kubernetes types are one row each, with the Kubernetes type named); the CRD schemas in
``manifests/crds`` supply each field's type, default, bounds, enum, CEL rules and description, as the
API server sees them. So the reference can drift from neither.

    python hack/gen_crd_docs.py           # write docs/crd-reference.md
    python hack/gen_crd_docs.py --check   # exit 1 when the committed file is stale (a unit test runs it)
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
if str(REPO / "hack") not in sys.path:  # a test loads this file by path; as a script, hack/ is on it
    sys.path.append(str(REPO / "hack"))

from _genfile import write_or_check  # noqa: E402

from ojsctrl.api import (  # noqa: E402
    OJSCluster,
    OJSClusterSpec,
    OJSClusterStatus,
    OJSModel,
    OJSWorker,
    OJSWorkerSpec,
    OJSWorkerStatus,
)
from ojsctrl.api.markers import K8s, K8sObject  # noqa: E402

OUT = REPO / "docs" / "crd-reference.md"
CRD_DIR = REPO / "manifests" / "crds"
KINDS = (
    ("OJSCluster", "ojs.openjobspec.dev_ojsclusters.yaml", OJSCluster, OJSClusterSpec, OJSClusterStatus),
    ("OJSWorker", "ojs.openjobspec.dev_ojsworkers.yaml", OJSWorker, OJSWorkerSpec, OJSWorkerStatus),
)
Row = tuple[str, str, str, str, str]


def _model_of(annotation: Any) -> tuple[type[OJSModel] | None, bool]:
    """The OJS model inside an annotation (Optional, list, Annotated unwrapped) and whether it is a list."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _model_of(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                found, is_list = _model_of(arg)
                if found is not None:
                    return found, is_list
        return None, False
    if origin is list:
        found, _ = _model_of(get_args(annotation)[0])
        return found, found is not None
    if isinstance(annotation, type) and issubclass(annotation, OJSModel):
        return annotation, False
    return None, False


def _k8s_ref(metadata: list[Any]) -> str | None:
    for m in metadata:
        if isinstance(m, K8s):
            return m.ref
        if isinstance(m, K8sObject):
            return "subset of " + ", ".join(sorted({ref.split(".")[0] for _, ref in m.properties}))
    return None


def _ordered_fields(model: type[OJSModel]) -> list[str]:
    """The model's own fields first (as declared), then inherited ones (pod settings last)."""
    own = [n for n in inspect.get_annotations(model) if n in model.model_fields]
    return own + [n for n in model.model_fields if n not in own]


def _type_of(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    kind = node.get("type", "object")
    if kind == "array":
        return "[]" + _type_of(node.get("items") or {})
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "map[string]" + _type_of(node["additionalProperties"])
    if kind == "integer" and node.get("format"):
        return str(node["format"])
    if kind == "string" and node.get("format"):
        return f"string ({node['format']})"
    return str(kind)


def _code(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return f"`{text}`"


def _rules(node: dict[str, Any], required: bool) -> str:
    parts = []
    if required:
        parts.append("required")
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", ">="), ("maximum", "<=")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    if node.get("x-kubernetes-list-type") in ("set", "map"):
        parts.append(f"list type {node['x-kubernetes-list-type']}")
    return "; ".join(parts)


def _clean(text: str) -> str:
    return " ".join(text.split())


def cel_rules(node: dict[str, Any], path: str, out: list[str]) -> None:
    """The CEL rules (x-kubernetes-validations) on one schema node, as list items."""
    for rule in node.get("x-kubernetes-validations") or ():
        out.append(f"- `{path}`: {_clean(rule['message'])} — `{rule['rule']}`")


def walk(model: type[OJSModel], node: dict[str, Any], prefix: str, rows: list[Row], cel: list[str]) -> None:
    """Append a row per field of `model` (recursing into OJS models), reading facts from the CRD `node`."""
    props = node.get("properties") or {}
    required = set(node.get("required") or ())
    for name in _ordered_fields(model):
        info = model.model_fields[name]
        key = info.alias or name
        child = props.get(key)
        if child is None:
            continue  # not part of the CRD (computed in Python only)
        path = prefix + key
        sub, is_list = _model_of(info.annotation)
        ref = _k8s_ref(list(info.metadata))
        kind = _type_of(child)
        if ref:
            kind += f" (Kubernetes `{ref}`)"
        elif sub is not None:
            kind = ("[]" if is_list else "") + sub.__name__
        default = _code(child["default"]) if "default" in child else ""
        description = _clean(child.get("description", ""))
        rows.append((f"`{path}`", kind, default, _rules(child, key in required), description))
        cel_rules(child, path, cel)
        target = child
        if is_list and sub is not None and not ref:
            target = child.get("items", {})
            cel_rules(target, path + "[]", cel)
        if sub is not None and not ref:
            walk(sub, target, path + ("[]." if is_list else "."), rows, cel)


def _table(rows: list[Row]) -> list[str]:
    out = ["| Field | Type | Default | Validation | Description |", "|---|---|---|---|---|"]
    out.extend("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows)
    return out


def render() -> str:
    """The whole reference as Markdown (deterministic)."""
    lines = [
        "<!-- Generated by `python hack/gen_crd_docs.py` from src/ojsctrl/api and manifests/crds. -->",
        "<!-- Do not edit: run `make manifests` (a unit test fails when this file is stale). -->",
        "# CRD reference",
        "",
        "Group `ojs.openjobspec.dev`, version `v1alpha1`. Both kinds are namespaced, have a `status`",
        "and a `scale` subresource and belong to the category `openjobspec` (`kubectl get openjobspec` lists",
        "both; `ojs` and `ojsw` are the short names for every verb). The same facts are available from the",
        "cluster: `kubectl explain ojscluster.spec --recursive`.",
        "",
        "Defaults are applied by the API server when a field is absent; `Validation` lists the schema's",
        "constraints, and the CEL rules below each table hold across fields. The admission webhook adds",
        "the Python-only rules and warnings described in [the install guide](install.md#admission-webhook).",
        "",
    ]
    for kind, filename, root, spec_model, status_model in KINDS:
        crd = yaml.safe_load((CRD_DIR / filename).read_text())
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        names = crd["spec"]["names"]
        lines += [f"## {kind}", ""]
        lines.append(_clean(schema.get("description") or root.__doc__ or ""))
        lines += [
            "",
            f"- Plural `{names['plural']}`, short names "
            + ", ".join(f"`{s}`" for s in names.get("shortNames", []))
            + ", categories "
            + ", ".join(f"`{c}`" for c in names.get("categories", [])),
            "- Subresources: " + ", ".join(f"`{s}`" for s in sorted(version.get("subresources") or {})),
            "- `kubectl get` columns: "
            + ", ".join(c["name"] for c in version.get("additionalPrinterColumns") or []),
            "",
        ]
        for section, model in (("spec", spec_model), ("status", status_model)):
            rows: list[Row] = []
            cel: list[str] = []
            cel_rules(schema["properties"][section], section, cel)
            walk(model, schema["properties"][section], f"{section}.", rows, cel)
            lines += [f"### {kind} {section}", "", *_table(rows), ""]
            if cel:
                lines += [f"CEL rules on `{kind}` {section}:", "", *cel, ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(argv, __doc__, OUT, render, check_help="fail when docs/crd-reference.md is stale")


if __name__ == "__main__":
    sys.exit(main())
