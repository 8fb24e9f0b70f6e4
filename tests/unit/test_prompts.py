from __future__ import annotations

from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.prompts import load_prompts, load_template

GOOD = """name = "answer"
version = 3
variables = ["sources", "question"]
system = "Use {sources}."
user = "{question}"
"""


def test_builtin_prompts_load_with_name_and_version():
    prompts = load_prompts()
    assert prompts.answer.label == "answer@v3"
    assert prompts.condense.variables == {"history", "question"}


def test_override_dir_replaces_a_template(tmp_path: Path):
    (tmp_path / "answer.toml").write_text(GOOD)
    prompts = load_prompts(tmp_path)
    assert prompts.answer.label == "answer@v3"
    assert prompts.condense.label == "condense@v1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("{question}", "{questoin}"), "declares"),
        (GOOD.replace("version = 3\n", ""), "missing version"),
        (GOOD.replace("Use {sources}.", "Use {sources"), "bad template"),
        (GOOD.replace("= 3", "= 0"), "positive integer"),
        ("not toml at all [", "answer.toml"),
    ],
)
def test_invalid_templates_are_refused(tmp_path: Path, text: str, message: str):
    path = tmp_path / "answer.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_template(path)


def test_template_missing_a_chain_variable_is_refused(tmp_path: Path):
    (tmp_path / "answer.toml").write_text(
        GOOD.replace('"sources", ', "").replace("Use {sources}.", "Answer.")
    )
    with pytest.raises(ConfigError, match="must use exactly"):
        load_prompts(tmp_path)


def test_worked_example_needs_both_halves_and_is_not_a_template(tmp_path: Path):
    path = tmp_path / "answer.toml"
    path.write_text(GOOD + 'example_user = "Q {not_a_variable}"\n')
    with pytest.raises(ConfigError, match="go together"):
        load_template(path)
    path.write_text(GOOD + 'example_user = "Q {x}"\nexample_assistant = "A [1]"\n')
    template = load_template(path)
    messages = template.chat_template().format_messages(sources="S", question="Q?")
    assert [m.type for m in messages] == ["system", "human", "ai", "human"]
    assert messages[1].content == "Q {x}"
