"""Redaction for the support report: no Secret value and no credential leaves the cluster in it.

Layers, each catching what the one before may miss:

1. Structure: ``data``/``stringData``/``binaryData``/``encryptedData`` of anything Secret-like keep their
   keys, every value becomes ``<redacted>``; env entries whose names look like credentials lose their
   ``value``; a string under a key that looks like a credential is replaced; annotations holding a
   last-applied configuration (a copy of the object, Secret data included) are replaced; managedFields
   are dropped.
2. Text: URLs lose the password in ``user:password@`` (or a lone token ``token@``), ``Bearer``/``Basic``
   credentials and ``password=...``-style pairs are replaced, in objects and logs alike.
3. Known values: every Secret value the report saw (plain and base64) is replaced wherever it still
   appears, e.g. an API key a user pasted into a ConfigMap or a log line.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "<redacted>"
SECRET_DATA_FIELDS = ("data", "stringData", "binaryData", "encryptedData")
# Names of variables/keys that hold credentials. Strong words count anywhere in a name (PGPASSWORD,
# client_secret); weak ones only as a word of it (GITHUB_TOKEN, authToken, but not author or tokens).
# REDIS_URL stays: its password goes through the URL rule.
_STRONG_WORDS = (
    r"(?:pass(?:word|wd|phrase)|secret|api[-_]?key|access[-_]?key|private[-_]?key|signing[-_]?key|credential)"
)
# (Not "session": sessionAffinity is a Service's field and worth reading.)
_WEAK_WORDS = r"(?:pass|pwd|token|auth|bearer|cookie|salt|dsn)"
_CREDENTIAL_WORDS = f"(?:{_STRONG_WORDS}|{_WEAK_WORDS})"
STRONG_NAME = re.compile(_STRONG_WORDS, re.I)
# A word boundary is a separator, the ends, or a camelCase hump (matched case-sensitively).
WEAK_NAME = re.compile(
    rf"(?:^|[-_.]|(?-i:(?<=[a-z])(?=[A-Z]))){_WEAK_WORDS}(?:$|[-_.]|(?-i:(?=[A-Z])))", re.I
)
# Keys that hold references or names, not values (apiKeySecretRef, secretName, tokenPath...).
REFERENCE_SUFFIXES = ("ref", "name", "names", "path", "file", "mode", "type", "keys", "key_ref", "prefix")
LAST_APPLIED = ("last-applied", "lastapplied")

_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@?#\"']+)@")
_AUTH_HEADER = re.compile(r"(?P<kind>\b(?:Bearer|Basic|Token)\s+)[A-Za-z0-9._~+/=-]{6,}", re.I)
_PAIR = re.compile(
    rf"(?P<key>\b[\w.-]*{_CREDENTIAL_WORDS}[\w.-]*[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&}}]+)", re.I
)
# Shorter known values are left to the other layers: scrubbing "true" or "redis" everywhere would make the
# report unreadable and hide nothing worth hiding. Lines of a multi-line value (a PEM key) count from 12.
MIN_KNOWN_LENGTH = 6
MIN_KNOWN_LINE = 12


def secret_like_name(name: str) -> bool:
    """Does this variable or key name look like it holds a credential (and not a reference to one)?"""
    lowered = name.lower()
    if lowered.endswith(REFERENCE_SUFFIXES) and not lowered.endswith(("_key", "-key", "apikey")):
        return False
    return bool(STRONG_NAME.search(name) or WEAK_NAME.search(name))


def redact_text(text: str) -> str:
    """Credentials in free text: URL passwords, authorization headers, ``password=...`` pairs."""

    def userinfo(m: re.Match[str]) -> str:
        user, sep, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}:{REDACTED}@" if sep else f"{m.group('scheme')}{REDACTED}@"

    text = _URL_USERINFO.sub(userinfo, text)
    text = _AUTH_HEADER.sub(lambda m: m.group("kind") + REDACTED, text)
    return _PAIR.sub(
        lambda m: m.group("key") + REDACTED if m.group("value") != REDACTED else m.group(0), text
    )


def _is_secret_like(obj: dict[str, Any]) -> bool:
    kind = str(obj.get("kind") or "")
    return kind.endswith("Secret") or "stringData" in obj or "encryptedData" in obj


def _walk(value: Any, key: str | None) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        secret_like = _is_secret_like(value)
        env_like = "name" in value and "value" in value and isinstance(value.get("name"), str)
        for k, v in value.items():
            if k == "managedFields":
                continue
            if secret_like and k in SECRET_DATA_FIELDS and isinstance(v, dict):
                out[k] = dict.fromkeys(v, REDACTED)
            elif k == "annotations" and isinstance(v, dict):
                out[k] = {
                    ak: REDACTED
                    if any(m in ak.lower() for m in LAST_APPLIED)
                    else (REDACTED if secret_like_name(ak.rsplit("/", 1)[-1]) else redact_text(str(av)))
                    for ak, av in v.items()
                }
            elif env_like and k == "value" and secret_like_name(value["name"]):
                # A flag (OJS_ALLOW_INSECURE_NO_AUTH=true) is no credential, and worth seeing.
                out[k] = v if str(v).lower() in ("true", "false", "") else REDACTED
            else:
                out[k] = _walk(v, k)
        return out
    if isinstance(value, list):
        return [_walk(v, key) for v in value]
    if isinstance(value, str):
        if key is not None and secret_like_name(key):
            return REDACTED
        return redact_text(value)
    return value


def redact_object(obj: Any) -> Any:
    """A redacted copy of an API object (or any JSON value); the input is not changed."""
    return _walk(obj, None)


def known_values(secrets: Iterable[dict[str, Any]]) -> set[str]:
    """Every value the Secrets hold, decoded, plus its base64 form as it appears in the API."""
    out: set[str] = set()
    for s in secrets:
        for field in ("data", "binaryData"):
            for raw in (s.get(field) or {}).values():
                if not isinstance(raw, str):
                    continue
                out.add(raw)
                try:
                    decoded = base64.b64decode(raw, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    continue
                out.add(decoded)
                lines = [line.strip() for line in decoded.splitlines()]
                out.update(line for line in lines if len(lines) > 1 and len(line) >= MIN_KNOWN_LINE)
        for raw in (s.get("stringData") or {}).values():
            if isinstance(raw, str):
                out.add(raw)
                out.add(base64.b64encode(raw.encode()).decode())
    return {v for v in out if len(v) >= MIN_KNOWN_LENGTH}


def scrub_known(text: str, values: Iterable[str]) -> str:
    """Replace every occurrence of the known secret values (longest first, so none is left in part)."""
    for v in sorted(values, key=len, reverse=True):
        if v in text:
            text = text.replace(v, REDACTED)
    return text
