"""The moderation hook: a local blocklist, an OpenAI-compatible endpoint, and both."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rag.errors import ConfigError, EndpointFault, ProviderError
from rag.guard.moderation import (
    BlocklistModerator,
    CombinedModerator,
    EndpointModerator,
    Verdict,
    build_moderator,
    normalise,
)
from rag.settings import Settings
from tests.faultserver import refused_url
from tests.moderation_stub import ModerationStub


def blocklist(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "blocklist.txt"
    path.write_text(text, encoding="utf-8")
    return path


# -- blocklist --------------------------------------------------------------------------


def test_blocklist_terms_match_whole_words_only(tmp_path: Path) -> None:
    mod = BlocklistModerator.from_file(blocklist(tmp_path, "# rude words\nass\n\n  darn it  \n"))
    assert mod.check("what an ass").flagged
    assert mod.check("Ass!").flagged
    assert not mod.check("the class passed its assessment").flagged
    assert not mod.check("grass, bass and mass").flagged
    assert mod.check("well, darn   it all").flagged  # whitespace collapsed
    assert not mod.check("darnit").flagged


def test_blocklist_normalises_case_width_and_invisible_characters(tmp_path: Path) -> None:
    mod = BlocklistModerator.from_file(blocklist(tmp_path, "Secret Plan\n"))
    assert mod.check("the SECRET\nplan").flagged
    assert mod.check("the ｓｅｃｒｅｔ plan").flagged  # fullwidth (NFKC)  # noqa: RUF001
    assert mod.check("the se\u200bcret plan").flagged  # zero-width space
    assert mod.check("the SECREt pla\u00adn").flagged  # soft hyphen
    assert not mod.check("a secretary planned").flagged
    assert normalise("  A\u200b  B\tC ") == "a b c"


def test_blocklist_regex_lines(tmp_path: Path) -> None:
    mod = BlocklistModerator.from_file(blocklist(tmp_path, "re: \\bcard\\s*\\d{4}\\b\nword\n"))
    verdict = mod.check("my Card 1234 please")
    assert verdict == Verdict(True, ("blocklist",), "the blocklist")
    assert not mod.check("my card please").flagged
    assert mod.check("a word").flagged


def test_blocklist_clean_text_not_flagged(tmp_path: Path) -> None:
    mod = BlocklistModerator.from_file(blocklist(tmp_path, "# only comments\n\n"))
    assert mod.check("anything at all") == Verdict(False, (), "the blocklist")


def test_bad_regex_is_a_config_error_naming_setting_and_line(tmp_path: Path) -> None:
    path = blocklist(tmp_path, "fine\nre: (unclosed\n")
    with pytest.raises(ConfigError) as caught:
        BlocklistModerator.from_file(path)
    assert caught.value.setting == "RAG_MODERATION_BLOCKLIST"
    assert "line 2" in caught.value.reason and "regular expression" in caught.value.reason


def test_unreadable_blocklist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"RAG_MODERATION_BLOCKLIST.*cannot read"):
        BlocklistModerator.from_file(tmp_path / "missing.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        BlocklistModerator.from_file(binary)


def test_blocklist_constructor_validates() -> None:
    with pytest.raises(ValueError, match="empty"):
        BlocklistModerator(["  "])
    with pytest.raises(ValueError, match="regular expression"):
        BlocklistModerator(patterns=["("])


# -- endpoint ---------------------------------------------------------------------------


def test_endpoint_flags_with_categories_and_sends_model_and_key() -> None:
    with ModerationStub(flag_words=("kill",)) as stub:
        mod = EndpointModerator(stub.base_url, "sk-test", "omni-moderation-latest", 5)
        verdict = mod.check("I will kill the process")
        clean = mod.check("How do I back up the database?")
        mod.close()
    assert verdict == Verdict(True, ("harassment", "violence"), "the moderation endpoint")
    assert clean == Verdict(False, (), "the moderation endpoint")
    first = stub.requests[0]
    assert first.path == "/v1/moderations"
    assert first.body == {"input": "I will kill the process", "model": "omni-moderation-latest"}
    assert first.authorization == "Bearer sk-test"


def test_endpoint_without_key_or_model_sends_neither() -> None:
    with ModerationStub() as stub:
        EndpointModerator(stub.base_url + "/").check("hello")
    assert stub.requests[0].body == {"input": "hello"}
    assert stub.requests[0].authorization is None


@pytest.mark.parametrize(
    ("mode", "status", "fault"),
    [
        ("status", 500, EndpointFault.SERVER_ERROR),
        ("status", 429, EndpointFault.RATE_LIMITED),
        ("status", 401, EndpointFault.CLIENT_ERROR),
        ("garbage", 200, EndpointFault.MALFORMED),
        ("shape", 200, EndpointFault.MALFORMED),
    ],
)
def test_endpoint_failures_are_provider_errors_without_the_text(
    mode: str, status: int, fault: EndpointFault
) -> None:
    secret = "my private question about payroll"
    with ModerationStub(mode=mode, status=status) as stub, pytest.raises(ProviderError) as caught:
        EndpointModerator(stub.base_url, "sk-secret-key").check(secret)
    err = caught.value
    assert err.fault == fault
    assert "/v1/moderations" in str(err) and "moderation endpoint" in str(err)
    assert secret not in str(err) and "sk-secret-key" not in str(err)
    if mode == "status":
        assert err.status == status


def test_unreachable_and_slow_endpoints_fail_fast() -> None:
    with pytest.raises(ProviderError) as caught:
        EndpointModerator(refused_url(), timeout_s=2).check("hi")
    assert caught.value.fault == EndpointFault.UNREACHABLE
    with ModerationStub(mode="hang") as stub:
        started = time.monotonic()
        with pytest.raises(ProviderError) as slow:
            EndpointModerator(stub.base_url, timeout_s=0.3).check("hi")
        assert time.monotonic() - started < 3
    assert slow.value.fault == EndpointFault.TIMEOUT


def test_endpoint_constructor_validates() -> None:
    with pytest.raises(ValueError, match="http"):
        EndpointModerator("ftp://example.com")
    with pytest.raises(ValueError, match="positive"):
        EndpointModerator("http://127.0.0.1:9", timeout_s=0)


# -- combined and built from settings ----------------------------------------------------


class Fixed:
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.calls = 0

    def check(self, text: str) -> Verdict:
        self.calls += 1
        return self.verdict


def test_combined_the_first_flag_decides_and_later_moderators_see_nothing() -> None:
    clean = Fixed(Verdict(False, (), "a"))
    one = Fixed(Verdict(True, ("blocklist",), "the blocklist"))
    two = Fixed(Verdict(True, ("hate", "blocklist"), "the moderation endpoint"))
    verdict = CombinedModerator([clean, one, two]).check("x")
    assert verdict == Verdict(True, ("blocklist",), "the blocklist")
    assert (clean.calls, one.calls, two.calls) == (1, 1, 0)  # the endpoint never got it
    assert CombinedModerator([clean]).check("x") == Verdict(False, (), "a")
    with pytest.raises(ValueError):
        CombinedModerator([])


def test_build_moderator_from_settings(tmp_path: Path) -> None:
    assert build_moderator(Settings()) is None
    path = blocklist(tmp_path, "forbidden\n")
    only_list = build_moderator(Settings(moderation_blocklist=path))
    assert isinstance(only_list, BlocklistModerator)
    with ModerationStub(flag_words=("hateful",)) as stub:
        both = build_moderator(
            Settings(
                moderation_blocklist=path,
                moderation_url=stub.base_url,
                moderation_model="m",
                moderation_api_key="sk-1",
            )
        )
        assert isinstance(both, CombinedModerator)
        assert both.check("a forbidden word").by == "the blocklist"
        endpoint_hit = both.check("a hateful word")
        assert endpoint_hit.flagged and endpoint_hit.by == "the moderation endpoint"
        assert not both.check("a kind word").flagged
    assert stub.requests[-1].authorization == "Bearer sk-1"
    assert stub.requests[-1].body["model"] == "m"


def test_build_moderator_reports_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RAG_MODERATION_BLOCKLIST"):
        build_moderator(Settings(moderation_blocklist=tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match="RAG_MODERATION_URL"):
        build_moderator(Settings(moderation_url="not a url"))


def test_a_remote_moderation_endpoint_gets_personal_data_masked(tmp_path) -> None:
    from rag.service.components import moderation_mask
    from rag.settings import Settings

    remote = Settings(data_dir=tmp_path, moderation_url="https://moderation.example.com/v1")
    mask = moderation_mask(remote)
    assert mask is not None
    assert mask("write to ann@example.org") == "write to <EMAIL_ADDRESS_1>"
    local = remote.model_copy(update={"moderation_url": "http://127.0.0.1:9/v1"})
    assert moderation_mask(local) is None
    assert moderation_mask(remote.model_copy(update={"pii": "off"})) is None


@pytest.mark.parametrize("text", ["bo\U000e0020mb", "b\u043emb", "\uff22\uff2f\uff2d\uff22"])
def test_the_blocklist_sees_through_disguises(tmp_path, text: str) -> None:
    path = tmp_path / "blocklist.txt"
    path.write_text("bomb\n")
    assert BlocklistModerator.from_file(path).check(f"how to build a {text} today").flagged
