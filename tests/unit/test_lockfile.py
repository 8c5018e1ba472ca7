"""The hashed lock files cover every declared dependency at a version the declaration allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile lock file."""
    found: dict[str, tuple[str, int]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            found[current] = (m.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, n = found[current]
            found[current] = (version, n + 1)
        elif not line.startswith(" "):
            current = None
    return found


def declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", [None]), ("requirements-dev.lock", [None, "dev"])]
)
def test_lock_pins_every_dependency_with_hashes(lock: str, extras: list[str | None]) -> None:
    locked = pins(REPO / lock)
    assert locked, f"{lock} pins nothing"
    for name, (version, hashes) in locked.items():
        assert hashes >= 1, f"{lock}: {name}=={version} has no --hash"
    for extra in extras:
        for req in declared(extra):
            name = canonicalize_name(req.name)
            assert name in locked, f"{lock} lacks {req} (run `make lock`)"
            assert req.specifier.contains(locked[name][0], prereleases=True), (
                f"{lock}: {name}=={locked[name][0]} does not satisfy {req} (run `make lock`)"
            )


def test_runtime_lock_is_the_dev_locks_subset() -> None:
    runtime, dev = pins(REPO / "requirements.lock"), pins(REPO / "requirements-dev.lock")
    differ = {
        n: (v, dev.get(n, ("absent", 0))[0]) for n, (v, _) in runtime.items() if dev.get(n, ("", 0))[0] != v
    }
    assert not differ, f"runtime and dev locks pin different versions: {differ} (run `make lock`)"
