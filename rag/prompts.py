"""Prompt templates kept in files, with a name and a version, validated when loaded."""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from rag.errors import ConfigError

BUILTIN_DIR = Path(__file__).resolve().parent / "prompts"
REQUIRED = {"condense": {"history", "question"}, "answer": {"sources", "question"}}


@dataclass(frozen=True)
class PromptTemplate:
    """A system + user message pair with declared variables."""

    name: str
    version: int
    system: str
    user: str
    variables: frozenset[str]
    path: Path
    example: tuple[str, str] | None = None

    @property
    def label(self) -> str:
        """``name@vN``: what every answer records."""
        return f"{self.name}@v{self.version}"

    def chat_template(self, *, with_history: bool = False) -> ChatPromptTemplate:
        """As a langchain-core chat prompt (optionally with a history placeholder)."""
        messages: list = [("system", self.system)]
        if self.example is not None:
            # Literal text: braces in the worked example are not template variables.
            messages.append(HumanMessage(self.example[0]))
            messages.append(AIMessage(self.example[1]))
        if with_history:
            messages.append(MessagesPlaceholder("chat_history", optional=True))
        messages.append(("human", self.user))
        return ChatPromptTemplate.from_messages(messages)


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def load_template(path: Path) -> PromptTemplate:
    """Read one template file and check its variables.

    Raises:
        ConfigError: the file is unreadable, misses a field, or uses a variable it does not
            declare (or declares one it never uses).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("RAG_PROMPTS_DIR", f"{path}: {exc}") from exc
    missing = [k for k in ("name", "version", "variables", "system", "user") if k not in data]
    if missing:
        raise ConfigError("RAG_PROMPTS_DIR", f"{path}: missing {', '.join(missing)}")
    declared = set(data["variables"])
    try:
        used = _fields(data["system"]) | _fields(data["user"])
    except ValueError as exc:
        raise ConfigError("RAG_PROMPTS_DIR", f"{path}: bad template: {exc}") from exc
    if used != declared:
        raise ConfigError(
            "RAG_PROMPTS_DIR",
            f"{path}: template uses {sorted(used)} but declares {sorted(declared)}",
        )
    example = None
    if "example_user" in data or "example_assistant" in data:
        if not ("example_user" in data and "example_assistant" in data):
            raise ConfigError(
                "RAG_PROMPTS_DIR", f"{path}: example_user and example_assistant go together"
            )
        example = (str(data["example_user"]), str(data["example_assistant"]))
    if not isinstance(data["version"], int) or data["version"] < 1:
        raise ConfigError("RAG_PROMPTS_DIR", f"{path}: version must be a positive integer")
    return PromptTemplate(
        name=str(data["name"]),
        version=data["version"],
        system=data["system"],
        user=data["user"],
        variables=frozenset(declared),
        path=path,
        example=example,
    )


@dataclass(frozen=True)
class Prompts:
    """The templates the chain needs."""

    condense: PromptTemplate
    answer: PromptTemplate


def load_prompts(override_dir: Path | None = None) -> Prompts:
    """Built-in templates, each replaced by a same-named file in ``override_dir`` if any.

    Raises:
        ConfigError: a template is invalid or lacks a variable the chain fills in.
    """
    loaded = {}
    for name, required in REQUIRED.items():
        path = BUILTIN_DIR / f"{name}.toml"
        if override_dir is not None and (override_dir / f"{name}.toml").is_file():
            path = override_dir / f"{name}.toml"
        template = load_template(path)
        if template.variables != required:
            raise ConfigError(
                "RAG_PROMPTS_DIR",
                f"{path}: the {name} prompt must use exactly {sorted(required)}",
            )
        loaded[name] = template
    return Prompts(**loaded)
