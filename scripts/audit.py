"""Licences and known vulnerabilities of the locked packages, printed as tables.

``make audit`` runs all of it; ``make licences`` (part of ``make lint``, so CI) runs the
licence part only::

    python -m scripts.audit              # licences, model weights, vulnerabilities
    python -m scripts.audit --licences   # licences and model weights only

Licences: every package pinned in ``requirements.lock``, as installed, classified by
``scripts/licences.py``; anything not plainly permissive must have a review in
``scripts/licence_review.py``. Model weights: the licence stated in the weights' own files
(``scripts/weights.py``). The check fails on an unreviewed licence, a lapsed review, a
weights licence other than the one we ship, or an environment that is not the lock.

Vulnerabilities come from ``pip-audit`` against PyPI's advisory data, for the locked
versions (no install, no resolution). Without a network, or without pip-audit, the report
says so and the licence part still runs.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from scripts.licence_review import REVIEWED
from scripts.licences import Distribution, Licence, Review, field_of, judge, licence_of
from scripts.weights import MODELS, model_rows

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"


@dataclass(frozen=True)
class Locked:
    """One pinned package of a lock file."""

    name: str
    version: str
    hashes: tuple[str, ...]


@dataclass(frozen=True)
class LicenceRow:
    """One row of the licence table."""

    name: str
    version: str
    scope: str
    licence: Licence
    verdict: str
    note: str

    def cells(self) -> list[str]:
        """The row's cells, in the table's column order."""
        lic = self.licence
        return [
            self.name,
            self.version,
            self.scope,
            lic.text,
            lic.source,
            lic.category,
            self.verdict,
            self.note,
        ]

    @property
    def failed(self) -> bool:
        """Whether this row fails the check."""
        return self.verdict == "FAIL"


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_HASH = re.compile(r"--hash=(\w+:[0-9a-f]+)")


def read_lock(path: Path) -> dict[str, Locked]:
    """The pins of a requirements file written by ``uv pip compile --generate-hashes``.

    Args:
        path: The lock file.

    Returns:
        The pinned packages by canonical name.

    Raises:
        ValueError: A requirement is not pinned with ``==``.
    """
    pins: dict[str, Locked] = {}
    current: tuple[str, str] | None = None
    hashes: list[str] = []

    def close() -> None:
        if current is not None:
            pins[canonicalize_name(current[0])] = Locked(current[0], current[1], tuple(hashes))

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if raw[0].isspace() or line.startswith("--"):
            hashes.extend(_HASH.findall(line))
            continue
        close()
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"{path.name}: not an exact pin: {line!r}")
        current, hashes = (match.group(1), match.group(2)), []
    close()
    return pins


def licence_rows(
    locked: dict[str, Locked],
    runtime: set[str],
    reviewed: dict[str, Review],
    find: Callable[[str], Distribution | None],
) -> tuple[list[LicenceRow], list[str]]:
    """The licence table of the locked packages, and the problems beside the table.

    Args:
        locked: The whole environment's pins.
        runtime: The canonical names also in the runtime lock (the Docker image).
        reviewed: The reviewed exceptions.
        find: Finds an installed distribution by name (None when not installed).

    Returns:
        The rows, and problems that fail the check but belong to no row: a locked package
        that is not installed or installed at another version, a review of a package that
        is no longer locked.
    """
    rows: list[LicenceRow] = []
    problems: list[str] = []
    for name in sorted(locked):
        pin = locked[name]
        dist = find(pin.name)
        if dist is None:
            problems.append(f"{pin.name}=={pin.version} is locked but not installed: make install")
            continue
        installed = field_of(dist.metadata, "Version")
        if installed != pin.version:
            problems.append(
                f"{pin.name} is installed at {installed}, locked at {pin.version}: "
                "make clean install"
            )
        licence = licence_of(dist)
        verdict, note = judge(name, licence, reviewed)
        scope = "runtime" if name in runtime else "dev"
        rows.append(LicenceRow(pin.name, pin.version, scope, licence, verdict, note))
    for name in sorted(set(reviewed) - set(locked)):
        problems.append(f"REVIEWED names {name}, which is no longer locked: remove the entry")
    return rows, problems


def _installed(name: str) -> metadata.Distribution | None:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int = 70) -> str:
    """A plain-text table, each cell cut to ``width`` characters.

    Args:
        headers: Column titles.
        rows: The cells, one list per row.
        width: The longest a cell is shown.

    Returns:
        The table, one line per row under a header and a rule.
    """

    def cut(cell: str) -> str:
        cell = " ".join(str(cell).split())
        return cell if len(cell) <= width else cell[: width - 1] + "…"

    cells = [[cut(h) for h in headers], *[[cut(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class Vulnerabilities:
    """What pip-audit found, or why it could not look.

    Attributes:
        rows: package, version, advisory id, aliases, versions that fix it.
        skipped: Packages pip-audit could not look up, with its reason.
        unavailable: Why there is no answer (no pip-audit, no network, a registry that
            serves packages but not their advisories), or None.
        looked_up: How many packages were looked up.
    """

    rows: list[list[str]]
    skipped: list[str]
    unavailable: str | None
    looked_up: int = 0


def audit_input(locked: dict[str, Locked]) -> str:
    """The requirements pip-audit looks up: the pins without local labels (``+cpu``).

    Advisories name public versions: ``torch==2.13.0+cpu`` is looked up as 2.13.0.
    """
    return "".join(f"{pin.name}=={pin.version.split('+')[0]}\n" for pin in locked.values())


def parse_pip_audit(report: dict[str, object]) -> tuple[list[list[str]], list[str]]:
    """The vulnerability rows and skipped packages of pip-audit's JSON report."""
    rows: list[list[str]] = []
    skipped: list[str] = []
    dependencies = report.get("dependencies", [])
    assert isinstance(dependencies, list)
    for dep in dependencies:
        if "skip_reason" in dep:
            skipped.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        for vuln in dep.get("vulns", []):
            rows.append(
                [
                    dep["name"],
                    dep["version"],
                    vuln.get("id", "?"),
                    ", ".join(vuln.get("aliases", [])) or "-",
                    ", ".join(vuln.get("fix_versions", [])) or "none yet",
                ]
            )
    return rows, skipped


PIP_AUDIT = (sys.executable, "-m", "pip_audit")


def vulnerabilities(
    locked: dict[str, Locked],
    service: str = "pypi",
    timeout_s: float = 600,
    pip_audit: Sequence[str] = PIP_AUDIT,
) -> Vulnerabilities:
    """Known vulnerabilities of the locked versions, from pip-audit.

    Args:
        locked: The pins.
        service: pip-audit's vulnerability service: ``pypi`` (PyPI's JSON API) or ``osv``.
        timeout_s: How long pip-audit may take.
        pip_audit: The command that runs pip-audit.

    Returns:
        The findings, or why there are none to show.
    """
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(audit_input(locked), encoding="utf-8")
        command = [*pip_audit, "--progress-spinner", "off", "--vulnerability-service", service]
        command += ["--format", "json", "--no-deps", "--disable-pip", "-r", str(requirements)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return Vulnerabilities([], [], f"pip-audit took more than {timeout_s:.0f} s")
    if "No module named pip_audit" in done.stderr:
        return Vulnerabilities([], [], "pip-audit is not installed (make install)")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        return Vulnerabilities([], [], f"pip-audit gave no report: {why}")
    rows, skipped = parse_pip_audit(report)
    looked_up = len(report.get("dependencies", [])) - len(skipped)
    if looked_up == 0 and skipped:
        # A registry mirror may serve the packages but not PyPI's JSON API with advisories.
        why = f"the {service} service answered for none of the {len(skipped)} packages"
        return Vulnerabilities([], skipped, f"{why} ({skipped[0]})")
    return Vulnerabilities(rows, skipped, None, looked_up)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the tables; the exit status is 1 when a check fails.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when None).

    Returns:
        0 when every licence passes (and, with vulnerabilities, none is known), else 1.
    """
    parser = argparse.ArgumentParser(prog="python -m scripts.audit", description=__doc__)
    parser.add_argument("--licences", action="store_true", help="licences only (what CI runs)")
    parser.add_argument("--brief", action="store_true", help="list only the non-permissive")
    parser.add_argument(
        "--service", choices=["pypi", "osv"], default="pypi", help="pip-audit's advisory source"
    )
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--runtime-lock", type=Path, default=RUNTIME_LOCK)
    args = parser.parse_args(argv)

    locked = read_lock(args.lock)
    runtime = set(read_lock(args.runtime_lock))
    rows, problems = licence_rows(locked, runtime, REVIEWED, _installed)
    shown = [r for r in rows if r.verdict != "ok"] if args.brief else rows
    print(f"Licences of the {len(rows)} locked packages ({args.lock.name}):\n")
    print(
        render(
            ["package", "version", "scope", "licence", "from", "category", "verdict", "note"],
            [r.cells() for r in shown],
        )
    )
    counts = {v: sum(r.verdict == v for r in rows) for v in ("ok", "reviewed", "FAIL")}
    print(
        f"\n{counts['ok']} permissive, {counts['reviewed']} reviewed (see "
        f"scripts/licence_review.py), {counts['FAIL']} failed"
    )
    weights, weight_problems = model_rows(MODELS)
    problems += weight_problems
    print("\nModel weights (licence stated in the file itself):\n")
    print(render(["package", "model", "file says", "shipped as", "verdict"], weights))
    failed = counts["FAIL"] > 0 or bool(problems)

    if not args.licences:
        print(f"\nKnown vulnerabilities (pip-audit, {args.service} service):\n")
        found = vulnerabilities(locked, args.service)
        if found.unavailable:
            print(f"NOT CHECKED: {found.unavailable}")
        else:
            if found.rows:
                print(render(["package", "version", "advisory", "aliases", "fixed in"], found.rows))
                failed = True
            else:
                print(f"none known for the {found.looked_up} versions looked up")
            for line in found.skipped:
                print(f"NOT CHECKED: {line}")

    problems += [f"{r.name} {r.licence.text!r}: {r.note}" for r in rows if r.failed]
    if problems:
        print()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
