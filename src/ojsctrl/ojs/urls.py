"""Where the operator reaches an OJS server: the ``--ojs-url-template`` flag, checked and rendered (design.md
§ojs-servers).

Pure: the flag parser calls :func:`validate_url_template`, the reconcilers :func:`url_for`.
"""

from __future__ import annotations

import string
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_PORT",
    "DEFAULT_URL_TEMPLATE",
    "url_for",
    "validate_url_template",
]

# The full cluster-domain name (design.md §cluster-domain): a `.svc`-only name goes through the DNS search
# path, where a namespace called `svc` can answer it.
DEFAULT_URL_TEMPLATE: Final = "http://{service}.{namespace}.svc.{cluster_domain}:{port}"
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
DEFAULT_PORT: Final = 8080
_TEMPLATE_FIELDS: Final = frozenset({"name", "namespace", "service", "port", "cluster_domain"})


def validate_url_template(template: str) -> None:
    """Raise ``ValueError`` unless ``template`` uses only design.md §ojs-servers's placeholders and renders an
    http(s) URL.

    Placeholders: ``{name}`` (the cluster), ``{namespace}``, ``{service}`` (``<name>-server``), ``{port}`` and
    ``{cluster_domain}`` (the operator's ``--cluster-domain``).
    Format specs, conversions and attribute access are refused: the template comes from a flag, and
    ``str.format`` would otherwise let it reach into objects.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"--ojs-url-template: {exc}") from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in _TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(
                f"--ojs-url-template: unknown placeholder {{{field_name}}}; "
                "use {name}, {namespace}, {service}, {port} and {cluster_domain}"
            )
    sample = template.format(
        name="c", namespace="ns", service="c-server", port=DEFAULT_PORT, cluster_domain=DEFAULT_CLUSTER_DOMAIN
    )
    parts = urlsplit(sample)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("--ojs-url-template: must render an http:// or https:// URL with a host")


def url_for(
    template: str,
    name: str,
    namespace: str,
    port: int = DEFAULT_PORT,
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
) -> str:
    """The base URL the operator uses to reach cluster ``name`` in ``namespace`` (no trailing slash)."""
    validate_url_template(template)
    url = template.format(
        name=name, namespace=namespace, service=f"{name}-server", port=port, cluster_domain=cluster_domain
    )
    return url.rstrip("/")
