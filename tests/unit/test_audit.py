"""The licence and vulnerability report of ``make audit`` (scripts/audit.py and its parts)."""

from __future__ import annotations

import json
import struct
import sys
from email.message import Message
from importlib import metadata
from pathlib import Path

import pytest

from rag.errors import ConfigError
from scripts.audit import (
    Locked,
    audit_input,
    licence_rows,
    main,
    parse_pip_audit,
    read_lock,
    render,
    vulnerabilities,
)
from scripts.licence_review import REVIEWED
from scripts.licences import (
    NOT_OSI,
    PERMISSIVE,
    STRONG,
    UNKNOWN,
    WEAK,
    Licence,
    Review,
    classify,
    judge,
    licence_of,
)
from scripts.weights import (
    MODELS,
    ModelWeights,
    gguf_metadata,
    model_card_licence,
    model_rows,
    weights_licence,
)

MIT_TEXT = """Copyright (c) 2020 Someone

Permission is hereby granted, free of charge, to any person obtaining a copy of this software
and associated documentation files (the "Software"), to deal in the Software without
restriction..."""
AGPL_TEXT = """                    GNU AFFERO GENERAL PUBLIC LICENSE
                       Version 3, 19 November 2007 ..."""


class FakeDist:
    """An installed distribution: core metadata and the files of its metadata folder."""

    def __init__(self, fields: list[tuple[str, str]], files: dict[str, str] | None = None):
        self.metadata = Message()
        for key, value in fields:
            self.metadata[key] = value
        self.files = files or {}

    def read_text(self, filename: str) -> str | None:
        return self.files.get(filename)


@pytest.mark.parametrize(
    ("expression", "category"),
    [
        ("MIT", PERMISSIVE),
        ("BSD-3-Clause AND MIT", PERMISSIVE),
        ("Apache-2.0 WITH LLVM-exception", PERMISSIVE),
        ("Apache Software License", PERMISSIVE),
        ("MIT OR GPL-3.0-or-later", PERMISSIVE),
        ("(MIT OR Apache-2.0) AND BSD-2-Clause", PERMISSIVE),
        ("(MIT OR Apache-2.0) AND GPL-3.0-only", STRONG),
        ("LGPL-2.1-or-later OR (MIT AND MPL-2.0)", WEAK),
        ("GPL-2.0-only WITH Classpath-exception-2.0", STRONG),
        ("MPL-2.0 AND MIT", WEAK),
        ("LGPL-3.0-only", WEAK),
        ("GPL-3.0", STRONG),
        ("AGPL-3.0-only", STRONG),
        ("MIT AND AGPL-3.0-or-later", STRONG),
        ("GNU Affero General Public License v3", STRONG),
        ("CC-BY-NC-4.0", NOT_OSI),
        ("LicenseRef-Proprietary", NOT_OSI),
        ("BSD-3-Clause, Apache-2.0, dependency licenses", UNKNOWN),
        ("Some Licence 1.0", UNKNOWN),
        ("MIT AND", UNKNOWN),
        ("", UNKNOWN),
    ],
)
def test_licence_categories(expression: str, category: str) -> None:
    assert classify(expression) == category


def test_the_spdx_expression_comes_first() -> None:
    dist = FakeDist(
        [
            ("License-Expression", "AGPL-3.0-only"),
            ("License", "MIT"),
            ("Classifier", "License :: OSI Approved :: MIT License"),
        ]
    )
    assert licence_of(dist) == Licence("AGPL-3.0-only", "License-Expression", STRONG)


def test_a_short_license_field_then_the_classifiers() -> None:
    assert licence_of(FakeDist([("License", "MPL-2.0")])).category == WEAK
    classified = FakeDist(
        [("License", "see LICENSE"), ("Classifier", "License :: OSI Approved :: BSD License")]
    )
    assert licence_of(classified) == Licence("BSD", "classifier", PERMISSIVE)
    public = FakeDist([("Classifier", "License :: Public Domain")])
    assert licence_of(public) == Licence("Public-Domain", "classifier", NOT_OSI)


def test_a_short_field_nothing_recognises_stays_unknown() -> None:
    # The package's own words are not overruled by a guess from a file.
    dist = FakeDist(
        [("License", "see LICENSE"), ("License-File", "LICENSE")], {"LICENSE": MIT_TEXT}
    )
    assert licence_of(dist) == Licence("see LICENSE", "License", UNKNOWN)


def test_the_licence_text_is_recognised_when_nothing_else_is_there() -> None:
    pep639 = FakeDist([("License-File", "LICENSE")], {"licenses/LICENSE": MIT_TEXT})
    assert licence_of(pep639) == Licence("MIT", "licence text", PERMISSIVE)
    long_field = FakeDist([("License", AGPL_TEXT)])
    assert licence_of(long_field) == Licence("AGPL-3.0", "licence text", STRONG)
    assert licence_of(FakeDist([])) == Licence("(none found)", "-", UNKNOWN)


def test_only_a_reviewed_licence_passes_when_not_permissive() -> None:
    agpl = Licence("AGPL-3.0-only", "License-Expression", STRONG)
    mit = Licence("MIT", "License-Expression", PERMISSIVE)
    review = {"x": Review("AGPL-3.0-only", "a reason")}
    assert judge("x", mit, {}) == ("ok", "")
    assert judge("x", agpl, {})[0] == "FAIL"
    assert judge("x", agpl, review) == ("reviewed", "a reason")
    relicensed = Licence("SSPL-1.0", "License-Expression", STRONG)
    assert judge("x", relicensed, review)[0] == "FAIL"
    assert judge("x", mit, review)[0] == "FAIL"  # a review no longer needed goes


def test_every_review_has_a_reason_and_a_licence_that_needs_one() -> None:
    for name, review in REVIEWED.items():
        assert review.reason.strip(), name
        assert classify(review.licence) != PERMISSIVE, name


def test_licence_rows_report_what_is_not_the_lock() -> None:
    locked = {
        "a": Locked("a", "1.0", ("sha256:00",)),
        "b": Locked("b", "2.0", ("sha256:11",)),
        "c": Locked("c", "3.0", ("sha256:22",)),
    }
    installed = {
        "a": FakeDist([("Version", "1.0"), ("License-Expression", "GPL-3.0-only")]),
        "b": FakeDist([("Version", "2.1"), ("License-Expression", "MIT")]),
    }
    reviewed = {"gone": Review("GPL-3.0-only", "was a tool")}
    rows, problems = licence_rows(locked, {"a"}, reviewed, installed.get)
    assert [(r.name, r.scope, r.verdict) for r in rows] == [
        ("a", "runtime", "FAIL"),
        ("b", "dev", "ok"),
    ]
    assert len(problems) == 3
    assert "b is installed at 2.1, locked at 2.0" in problems[0]
    assert "c==3.0 is locked but not installed" in problems[1]
    assert "REVIEWED names gone" in problems[2]


def _gguf(path: Path, pairs: list[tuple[str, int, bytes]]) -> Path:
    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    body = b"".join(string(key) + struct.pack("<I", kind) + value for key, kind, value in pairs)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + body)
    return path


def _string_value(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def test_the_gguf_header_gives_the_weights_licence(tmp_path: Path) -> None:
    tokens = struct.pack("<IQ", 8, 2) + _string_value("<s>") + _string_value("</s>")
    path = _gguf(
        tmp_path / "m.gguf",
        [
            ("general.architecture", 8, _string_value("llama")),
            ("llama.block_count", 4, struct.pack("<I", 30)),
            ("tokenizer.ggml.tokens", 9, tokens),
            ("general.license", 8, _string_value("apache-2.0")),
        ],
    )
    assert gguf_metadata(path, "general.license") == "apache-2.0"
    assert gguf_metadata(path, "general.url") is None
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match="not a GGUF"):
        gguf_metadata(tmp_path / "x.gguf", "general.license")


def test_the_model_card_gives_the_weights_licence(tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    card.write_text("---\nlanguage: en\nlicense: apache-2.0\ntags:\n- x\n---\n# Model\n")
    assert model_card_licence(card) == "apache-2.0"
    card.write_text("# Model\nlicense: mit\n")
    assert model_card_licence(card) is None


def _not_installed() -> Path:
    raise ConfigError("RAG_X", "the package is not installed")


def test_weights_under_another_licence_than_we_ship_fail(tmp_path: Path) -> None:
    (tmp_path / "card.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n")
    (tmp_path / "ok.md").write_text("---\nlicense: apache-2.0\n---\n")
    models = [
        ModelWeights("pkg", "good/model", lambda: tmp_path / "ok.md", "Apache-2.0"),
        ModelWeights("pkg", "other/model", lambda: tmp_path / "card.md", "Apache-2.0"),
        ModelWeights("absent", "gone/model", _not_installed, "Apache-2.0"),
    ]
    rows, problems = model_rows(models)
    assert [row[-1] for row in rows] == ["ok", "FAIL"]
    assert "'cc-by-nc-4.0'" in problems[0]
    assert "absent (model weights) is not installed" in problems[1]


def test_the_real_model_packages_state_apache_2() -> None:
    for model in MODELS:
        assert weights_licence(model.locate()) == "apache-2.0"


def test_pip_audit_looks_up_public_versions() -> None:
    locked = {"torch": Locked("torch", "2.13.0+cpu", ()), "numpy": Locked("numpy", "2.4.6", ())}
    assert audit_input(locked) == "torch==2.13.0\nnumpy==2.4.6\n"


def test_the_pip_audit_report_becomes_rows() -> None:
    report = {
        "dependencies": [
            {"name": "ok", "version": "1.0", "vulns": []},
            {
                "name": "bad",
                "version": "2.0",
                "vulns": [{"id": "PYSEC-1", "aliases": ["CVE-1"], "fix_versions": ["2.1"]}],
            },
            {"name": "torch", "skip_reason": "not on PyPI"},
        ],
        "fixes": [],
    }
    rows, skipped = parse_pip_audit(report)
    assert rows == [["bad", "2.0", "PYSEC-1", "CVE-1", "2.1"]]
    assert skipped == ["torch: not on PyPI"]


def test_no_report_without_pip_audit_says_why() -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit('ConnectionError: no route to host')"]
    found = vulnerabilities({"a": Locked("a", "1", ())}, pip_audit=failing)
    assert found.unavailable == "pip-audit gave no report: ConnectionError: no route to host"
    report = json.dumps({"dependencies": [{"name": "a", "version": "1", "vulns": []}]})
    answering = [sys.executable, "-c", f"print({report!r})"]
    found = vulnerabilities({"a": Locked("a", "1", ())}, pip_audit=answering)
    assert (found.rows, found.unavailable, found.looked_up) == ([], None, 1)


def test_a_service_that_knows_no_package_is_not_a_clean_bill() -> None:
    # A registry mirror serves packages but answers "not found" for their advisory data:
    # pip-audit skips every package, which must not read as "no vulnerabilities".
    skip = {"skip_reason": "Dependency not found on PyPI and could not be audited"}
    report = json.dumps(
        {"dependencies": [{"name": "a", "version": "1", **skip}, {"name": "b", **skip}]}
    )
    answering = [sys.executable, "-c", f"print({report!r})"]
    found = vulnerabilities({"a": Locked("a", "1", ())}, pip_audit=answering)
    assert found.unavailable is not None
    assert found.unavailable.startswith("the pypi service answered for none of the 2 packages")


def test_read_lock_takes_pins_and_hashes(tmp_path: Path) -> None:
    lock = tmp_path / "r.lock"
    lock.write_text(
        "# header\nFoo_Bar[x]==1.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "    # via baz\ntorch==2.13.0+cpu \\\n    --hash=sha256:cc\n"
    )
    assert read_lock(lock) == {
        "foo-bar": Locked("Foo_Bar", "1.0", ("sha256:aa", "sha256:bb")),
        "torch": Locked("torch", "2.13.0+cpu", ("sha256:cc",)),
    }
    lock.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        read_lock(lock)


def test_render_lines_up_columns() -> None:
    table = render(["a", "bb"], [["xxx", "y"], ["z", "w" * 100]], width=10)
    lines = table.splitlines()
    assert lines[0] == "a    bb"
    assert lines[1] == "---  ----------"
    assert lines[3] == "z    wwwwwwwww…"


def test_main_prints_the_table_and_fails_on_a_stale_review(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # End to end on this environment, with a lock of one installed, permissive package; the
    # real check runs in `make lint` against requirements.lock.
    lock = tmp_path / "r.lock"
    version = metadata.version("pytest")
    lock.write_text(f"pytest=={version} \\\n    --hash=sha256:00\n")
    status = main(["--licences", "--lock", str(lock), "--runtime-lock", str(lock)])
    out = capsys.readouterr().out
    assert "pytest" in out
    # Reviews of packages this tiny lock does not hold are reported as stale: the check fails.
    assert status == 1
    assert "REVIEWED names" in out
