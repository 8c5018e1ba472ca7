"""Replays OJS conformance cases (``shared/reference/ojs-conformance/suites``) against a server over HTTP.

The cases are JSON: steps of ``action``/``path``/``headers``/``body`` with ``assertions`` on ``status``
(or ``status_in``), ``headers`` and ``body`` (``$.a.b[0]`` paths to matchers: literals, ``{"$type"}``,
``{"$in"}``, ``{"$gte"}``, ``{"$exists"}``, shorthands such as ``"string:uuidv7"``), ``repeat``, ``capture``
and ``{{steps.<id>.response.body.<path>}}`` / ``{{<captured>}}`` templates. :func:`run_case` returns every
failed assertion as ``(step id, why)``; an empty list means the server passed the case.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def resolve(path: str, data: Any) -> Any:
    """Value at a ``$.a.b[0].c`` path, or MISSING."""
    assert path.startswith("$"), path
    current = data
    for name, index in _TOKEN.findall(path[1:]):
        if name:
            if not isinstance(current, dict) or name not in current:
                return MISSING
            current = current[name]
        else:
            i = int(index)
            if not isinstance(current, list) or i >= len(current):
                return MISSING
            current = current[i]
    return current


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shorthand(matcher: str, actual: Any) -> str | None:
    """Check a ``kind:detail`` shorthand; None when ``matcher`` is not one."""
    checks: dict[str, Callable[[Any], bool]] = {
        "string:uuid": lambda v: isinstance(v, str) and bool(_UUID.match(v)),
        "string:uuidv7": lambda v: isinstance(v, str) and bool(_UUID7.match(v)),
        "string:datetime": lambda v: isinstance(v, str) and bool(_DATETIME.match(v)),
        "string:nonempty": lambda v: isinstance(v, str) and v != "",
        "number:positive": lambda v: _is_number(v) and v > 0,
        "number:non_negative": lambda v: _is_number(v) and v >= 0,
        "array:nonempty": lambda v: isinstance(v, list) and len(v) > 0,
        "exists": lambda v: v is not MISSING and v is not None,
        "any": lambda v: v is not MISSING,
    }
    check = checks.get(matcher)
    if check is None:
        return None
    return "" if check(actual) else f"expected {matcher}, got {actual!r}"


def match(matcher: Any, actual: Any, context: dict[str, Any]) -> str:
    """'' when ``actual`` satisfies ``matcher``, else why not."""
    if isinstance(matcher, str):
        template = _EMBEDDED.fullmatch(matcher)
        if template:
            matcher = _lookup(template.group(1), context)
            assert matcher is not MISSING, f"template {template.group(0)} resolves to nothing"
            if not isinstance(matcher, str):
                return match(matcher, actual, context)
        else:
            short = _shorthand(matcher, actual)
            if short is not None:
                return short
        return (
            "" if actual == matcher and isinstance(actual, str) else f"expected {matcher!r}, got {actual!r}"
        )
    if isinstance(matcher, bool) or matcher is None:
        return "" if actual is matcher else f"expected {matcher!r}, got {actual!r}"
    if isinstance(matcher, int | float):
        ok = _is_number(actual) and actual == matcher
        return "" if ok else f"expected {matcher!r}, got {actual!r}"
    if isinstance(matcher, dict) and any(k.startswith("$") for k in matcher):
        for op, arg in matcher.items():
            why = _operator(op, arg, actual, context)
            if why:
                return why
        return ""
    if isinstance(matcher, dict):
        if not isinstance(actual, dict):
            return f"expected an object, got {actual!r}"
        for key, sub in matcher.items():
            why = match(sub, actual.get(key, MISSING), context)
            if why:
                return f"{key}: {why}"
        return ""
    if isinstance(matcher, list):
        if not isinstance(actual, list) or len(actual) != len(matcher):
            return f"expected {matcher!r}, got {actual!r}"
        for i, (m, a) in enumerate(zip(matcher, actual, strict=True)):
            why = match(m, a, context)
            if why:
                return f"[{i}]: {why}"
        return ""
    raise AssertionError(f"unsupported matcher {matcher!r}")


def _operator(op: str, arg: Any, actual: Any, context: dict[str, Any]) -> str:
    if op == "$exists":
        present = actual is not MISSING and actual is not None
        return "" if present == arg else f"expected $exists={arg}, got {actual!r}"
    if op == "$type":
        got = "missing" if actual is MISSING else json_type(actual)
        return "" if got == arg else f"expected type {arg}, got {got}"
    if op == "$in":
        return "" if any(not match(m, actual, context) for m in arg) else f"{actual!r} not in {arg!r}"
    if op == "$match":
        ok = isinstance(actual, str) and re.search(arg, actual) is not None
        return "" if ok else f"{actual!r} does not match {arg!r}"
    if op == "$size":
        if not isinstance(actual, list):
            return f"expected an array for $size, got {actual!r}"
        return match(arg, len(actual), context)
    bounds = {
        "$gte": lambda a, b: a >= b,
        "$gt": lambda a, b: a > b,
        "$lte": lambda a, b: a <= b,
        "$lt": lambda a, b: a < b,
    }
    if op in bounds:
        ok = _is_number(actual) and bounds[op](actual, arg)
        return "" if ok else f"expected {op} {arg}, got {actual!r}"
    raise AssertionError(f"unsupported assertion operator {op}")


_EMBEDDED = re.compile(r"\{\{(steps\.[^.}]+\.response\.body\.[^}]+|[A-Za-z_][A-Za-z0-9_]*)\}\}")


def _lookup(ref: str, context: dict[str, Any]) -> Any:
    if ref.startswith("steps."):
        step, _, rest = ref[len("steps.") :].partition(".response.body.")
        return resolve("$." + rest, context.get(step))
    return context.get("$vars", {}).get(ref, MISSING)


def substitute(value: Any, context: dict[str, Any]) -> Any:
    """Replace templates in a request: a whole-string template keeps the value's type."""
    if isinstance(value, str):
        whole = _EMBEDDED.fullmatch(value)
        if whole:
            return _lookup(whole.group(1), context)
        return _EMBEDDED.sub(lambda m: str(_lookup(m.group(1), context)), value)
    if isinstance(value, dict):
        return {k: substitute(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, context) for v in value]
    return value


def check_step(
    step: dict[str, Any], status: int, headers: dict[str, str], body: Any, context: dict[str, Any]
) -> list[str]:
    """All failed assertions of one step."""
    failures: list[str] = []
    assertions = step.get("assertions", {})
    if "status" in assertions:
        why = match(assertions["status"], status, context)
        if why:
            failures.append(f"status: {why}")
    if "status_in" in assertions and status not in assertions["status_in"]:
        failures.append(f"status: {status} not in {assertions['status_in']}")
    for name, expected in assertions.get("headers", {}).items():
        got = headers.get(name.lower(), MISSING)
        if isinstance(expected, dict):
            why = match(expected, got, context)
        else:
            value = "" if got is MISSING else got.split(";")[0].strip()
            why = "" if value == expected else f"expected {expected!r}, got {value!r}"
        if why:
            failures.append(f"header {name}: {why}")
    for path, matcher in assertions.get("body", {}).items():
        why = match(matcher, resolve(path, body), context)
        if why:
            failures.append(f"{path}: {why}")
    return failures


def run_case(
    case: dict[str, Any], base_url: str, http: urllib3.PoolManager, api_key: str | None = None
) -> list[tuple[str, str]]:
    """Replay one case against ``base_url``; every failed assertion as (step id, why)."""
    context: dict[str, Any] = {"$vars": {}}
    failures: list[tuple[str, str]] = []
    for step in case["steps"]:
        headers = dict(step.get("headers", {}))
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        for _ in range(int(step.get("repeat", 1))):
            body = substitute(step.get("body"), context)
            resp = http.request(
                step["action"],
                base_url + substitute(step["path"], context),
                headers=headers,
                body=None if body is None else json.dumps(body).encode(),
                timeout=5.0,
                retries=False,
            )
            try:
                payload = json.loads(resp.data) if resp.data else None
            except ValueError:
                payload = None  # plain-text 404 and the like: body assertions then see nothing
            context[step["id"]] = payload
            for name, path in step.get("capture", {}).items():
                context["$vars"][name] = resolve(path, payload)
            resp_headers = {k.lower(): v for k, v in resp.headers.items()}
            failures += [
                (step["id"], f) for f in check_step(step, resp.status, resp_headers, payload, context)
            ]
    return failures


def load_cases(suites_dir: Path, suites: tuple[str, ...], files: tuple[str, ...] = ()) -> list[Path]:
    """Case files of whole suites (directories under ``suites_dir``) plus single files, sorted."""
    paths = [p for s in suites for p in (suites_dir / s).glob("*.json")]
    paths += [suites_dir / f for f in files]
    return sorted(paths)
