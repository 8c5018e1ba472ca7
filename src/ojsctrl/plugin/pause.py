"""The pause annotations of an OJSWorker (issue 13: the operator honours them; this module only writes
and reads them).

``ojs.openjobspec.dev/autoscaling-paused`` is ``true`` (until resumed) or an RFC 3339 time the pause lasts
until; ``ojs.openjobspec.dev/paused-replicas`` is the replica count to hold while paused."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ojsctrl.api.durations import parse_duration

PAUSED_ANNOTATION = "ojs.openjobspec.dev/autoscaling-paused"
PAUSED_REPLICAS_ANNOTATION = "ojs.openjobspec.dev/paused-replicas"


def format_time(t: dt.datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second (as Kubernetes writes times)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 time with a zone (``Z`` or an offset); ValueError otherwise."""
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ValueError(f"not an RFC 3339 time: {value!r} (e.g. 2026-12-05T18:00:00Z)") from None
    if "T" not in text.upper() or parsed.tzinfo is None:
        raise ValueError(f"not an RFC 3339 time with a zone: {value!r} (e.g. 2026-12-05T18:00:00Z)")
    return parsed.astimezone(dt.UTC)


def pause_patch(
    *,
    until: str | None = None,
    duration: str | None = None,
    replicas: int | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The merge patch that pauses: only the two annotations, nothing else of the object.

    ``until`` (RFC 3339) or ``duration`` (Go duration from now) bound the pause; neither pauses until
    resumed. Without ``replicas`` a paused-replicas annotation left from an earlier pause is removed, so
    the workers hold what they have."""
    if until is not None and duration is not None:
        raise ValueError("--until and --for exclude each other")
    if replicas is not None and replicas < 0:
        raise ValueError(f"--replicas must be 0 or more, got {replicas}")
    value = "true"
    if until is not None:
        try:
            value = format_time(parse_time(until))
        except ValueError as e:
            raise ValueError(f"--until: {e}") from None
    elif duration is not None:
        try:
            span = parse_duration(duration)
        except ValueError as e:
            raise ValueError(f"--for: {e}") from None
        if span.total_seconds() <= 0:
            raise ValueError(f"--for must be positive, got {duration!r}")
        value = format_time((now or dt.datetime.now(dt.UTC)) + span)
    return {
        "metadata": {
            "annotations": {
                PAUSED_ANNOTATION: value,
                PAUSED_REPLICAS_ANNOTATION: str(replicas) if replicas is not None else None,
            }
        }
    }


def resume_patch() -> dict[str, Any]:
    """The merge patch that removes both annotations (null deletes a key in a merge patch)."""
    return {"metadata": {"annotations": {PAUSED_ANNOTATION: None, PAUSED_REPLICAS_ANNOTATION: None}}}


def pause_state(annotations: dict[str, str] | None, now: dt.datetime) -> dict[str, Any] | None:
    """What the annotations say: None when not paused, else paused/until/expired/replicas (and the raw
    values, so a malformed one is shown rather than hidden)."""
    ann = annotations or {}
    raw = ann.get(PAUSED_ANNOTATION)
    raw_replicas = ann.get(PAUSED_REPLICAS_ANNOTATION)
    if raw is None and raw_replicas is None:
        return None
    out: dict[str, Any] = {"annotation": raw, "until": None, "expired": False, "replicas": None}
    if raw is not None and raw.strip().lower() != "true":
        try:
            until = parse_time(raw)
            out["until"] = format_time(until)
            out["expired"] = until <= now
        except ValueError:
            out["invalid"] = f"{PAUSED_ANNOTATION}={raw!r} is neither true nor an RFC 3339 time"
    if raw_replicas is not None:
        try:
            out["replicas"] = int(raw_replicas)
        except ValueError:
            out["invalid"] = f"{PAUSED_REPLICAS_ANNOTATION}={raw_replicas!r} is not a number"
    return out
