"""Accounts, API keys, collections, session cookies, rate limits and the audit trail."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from rag.access.accounts import Accounts
from rag.access.audit import AuditLog
from rag.access.limits import LimitSettings, RateLimits
from rag.access.principal import Principal, Right, Role, Scope
from rag.access.sessions import SessionClaims, SessionSigner, session_secret
from rag.errors import AuthenticationError, InvalidInputError, NotFoundError, RateLimitedError

CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    return Accounts(tmp_path / "access.sqlite", CHEAP)


def test_passwords_are_stored_as_argon2id_and_checked(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path / "access.sqlite")  # the real parameters
    user = accounts.add_user("alice", "member", "correct horse")
    with sqlite3.connect(accounts.path) as db:
        (stored,) = db.execute("SELECT password FROM users WHERE id = ?", (user.id,)).fetchone()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert accounts.check_password("alice", "correct horse") == user
    assert accounts.check_password("ALICE", "correct horse") == user  # names ignore case
    assert accounts.check_password("alice", "wrong horse") is None
    assert accounts.check_password("nobody", "correct horse") is None


def test_bad_accounts_are_refused_with_the_field(accounts: Accounts) -> None:
    accounts.add_user("bob", "viewer", "password1")
    with pytest.raises(InvalidInputError, match="name"):
        accounts.add_user("Bob", "member", "password2")
    with pytest.raises(InvalidInputError, match="password"):
        accounts.add_user("carol", "member", "short")
    with pytest.raises(InvalidInputError, match="role"):
        accounts.add_user("carol", "owner", "password3")
    with pytest.raises(InvalidInputError, match="name"):
        accounts.add_user("../etc", "member", "password3")
    with pytest.raises(NotFoundError):
        accounts.user("carol")


def test_disabling_or_a_new_password_ends_sessions(accounts: Accounts) -> None:
    user = accounts.add_user("dave", "member", "password1")
    disabled = accounts.set_disabled("dave")
    assert disabled.disabled and disabled.epoch == user.epoch + 1
    assert accounts.check_password("dave", "password1") is None
    enabled = accounts.set_disabled("dave", False)
    renewed = accounts.set_password("dave", "password2")
    assert renewed.epoch == enabled.epoch + 1
    assert accounts.check_password("dave", "password2") is not None


def test_api_keys_are_stored_hashed_and_revocable(accounts: Accounts) -> None:
    user = accounts.add_user("erin", "member", "password1")
    key, token = accounts.create_key(user.id, "ci", collections=frozenset({"c1"}), read_only=True)
    assert token.startswith("rck_")
    raw = accounts.path.read_bytes()
    assert token.split("_", 2)[2].encode() not in raw
    found = accounts.key_for(token)
    assert found is not None and found.id == key.id and found.read_only
    assert found.collections == frozenset({"c1"})
    assert accounts.key(key.id).last_used_at is not None
    assert accounts.key_for(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert accounts.key_for("rck_nonsense") is None
    accounts.revoke_key(key.id)
    assert accounts.key_for(token) is None
    assert accounts.key(key.id).revoked_at is not None


def test_collection_rights_come_from_owner_members_and_groups(accounts: Accounts) -> None:
    owner = accounts.add_user("fay", "member", "password1")
    other = accounts.add_user("gus", "member", "password1")
    col = accounts.create_collection("research", owner.id)
    fay, gus = owner.principal(), other.principal()
    assert col.right_of(fay) is Right.EDITOR and col.right_of(gus) is None
    accounts.share(col.id, "user", other.id, "viewer")
    col = accounts.find_collection("research")
    assert col is not None and col.right_of(gus) is Right.VIEWER
    accounts.share(col.id, "group", "physics", "editor")
    col = accounts.find_collection(col.id)
    assert col is not None
    in_group = Principal(other.id, "gus", Role.MEMBER, groups=frozenset({"physics"}))
    assert col.right_of(in_group) is Right.EDITOR
    assert accounts.unshare(col.id, "user", other.id)
    col = accounts.find_collection(col.id)
    assert col is not None and col.right_of(gus) is None
    with pytest.raises(InvalidInputError):
        accounts.create_collection("Research", other.id)


def test_external_identities_get_one_account_each(accounts: Accounts) -> None:
    first = accounts.external_user("oidc", "sub-1", "harry@example.org")
    again = accounts.external_user("oidc", "sub-1", "renamed@example.org")
    other = accounts.external_user("oidc", "sub-2", "harry@example.org")
    assert first == again and first.role is Role.MEMBER
    assert other.id != first.id and other.name != first.name


def test_scopes_never_widen() -> None:
    scope = Scope.only({"a", "b"}, owner="u1")
    assert scope.narrowed({"b", "c"}).collections == frozenset({"b"})
    assert Scope.everything().narrowed({"c"}).collections == frozenset({"c"})
    assert scope.narrowed(None) == scope
    assert not scope.allows("c") and Scope.everything().allows("c")


class _OldSigner(SessionSigner):
    def sign_at(self, claims: SessionClaims, seconds_ago: float) -> str:
        now = time.time
        try:
            time.time = lambda: now() - seconds_ago  # type: ignore[assignment]
            return self.sign(claims)
        finally:
            time.time = now  # type: ignore[assignment]


def test_session_cookies_are_signed_and_expire(tmp_path: Path) -> None:
    secret = session_secret(None, tmp_path)
    assert session_secret(None, tmp_path) == secret  # kept for every process
    assert (tmp_path / "session.key").stat().st_mode & 0o077 == 0
    signer = _OldSigner(secret, ttl_s=60)
    claims = SessionClaims("u1", 3, "password", frozenset({"g"}))
    cookie = signer.sign(claims)
    assert signer.check(cookie) == claims
    tampered = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
    with pytest.raises(AuthenticationError, match="not valid"):
        signer.check(tampered)
    with pytest.raises(AuthenticationError, match="not valid"):
        SessionSigner("another secret of at least thirty-two chars", 60).check(cookie)
    with pytest.raises(AuthenticationError, match="expired"):
        signer.check(signer.sign_at(claims, 120))


def test_request_limits_answer_with_when_to_retry() -> None:
    limits = RateLimits(LimitSettings(requests_per_minute=3, key_requests_per_minute=2))
    user = Principal("u1", "ann", Role.MEMBER)
    for _ in range(3):
        limits.request(user)
    with pytest.raises(RateLimitedError) as caught:
        limits.request(user)
    assert 1 <= caught.value.retry_after_s <= 60
    assert "requests per minute" in str(caught.value)
    keyed = Principal("u2", "bea", Role.MEMBER, key_id="k1")
    limits.request(keyed)
    limits.request(keyed)
    with pytest.raises(RateLimitedError, match="API key"):
        limits.request(keyed)
    limits.request(Principal("u2", "bea", Role.MEMBER))  # the user still has requests left


def test_model_tokens_per_day() -> None:
    limits = RateLimits(LimitSettings(tokens_per_day=1000))
    user = Principal("u1", "ann", Role.MEMBER)
    limits.tokens_left(user)
    limits.spend_tokens(user, 700)
    limits.tokens_left(user)
    limits.spend_tokens(user, 700)  # overshoots: counted up to the budget
    with pytest.raises(RateLimitedError, match="tokens per day") as caught:
        limits.tokens_left(user)
    assert caught.value.retry_after_s > 3600


def test_failed_sign_ins_lock_the_account_and_the_address() -> None:
    limits = RateLimits(LimitSettings(signin_failures=3, signin_failures_per_address=5))
    for _ in range(3):
        limits.signin_allowed("ann", "10.0.0.1")
        limits.signin_failed("ann", "10.0.0.1")
    with pytest.raises(RateLimitedError, match="account"):
        limits.signin_allowed("Ann", "10.0.0.9")
    limits.signin_allowed("bea", "10.0.0.1")
    limits.signin_failed("bea", "10.0.0.1")
    limits.signin_failed("cat", "10.0.0.1")
    with pytest.raises(RateLimitedError, match="address"):
        limits.signin_allowed("dan", "10.0.0.1")


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit.sqlite")
    for n in range(1, 6):
        log.append("ann", "question", f"conversation {n}", {"n": n})
    return log


def _tamper(log: AuditLog, *statements: str) -> None:
    # An attacker edits the file itself: the triggers are no obstacle then.
    with sqlite3.connect(log.path) as db:
        db.execute("DROP TRIGGER records_no_update")
        db.execute("DROP TRIGGER records_no_delete")
        for statement in statements:
            db.execute(statement)


def test_the_audit_trail_verifies_and_refuses_changes(audit: AuditLog) -> None:
    verdict = audit.verify()
    assert verdict.ok and verdict.records == 5
    with sqlite3.connect(audit.path) as db, pytest.raises(sqlite3.DatabaseError):
        db.execute("UPDATE records SET actor = 'eve' WHERE seq = 2")
    with sqlite3.connect(audit.path) as db, pytest.raises(sqlite3.DatabaseError):
        db.execute("DELETE FROM records WHERE seq = 2")
    assert audit.verify().ok


def test_an_edited_record_is_named(audit: AuditLog) -> None:
    _tamper(audit, "UPDATE records SET actor = 'eve' WHERE seq = 3")
    verdict = audit.verify()
    assert not verdict.ok and verdict.seq == 3 and "changed" in str(verdict.problem)


def test_a_removed_record_is_named(audit: AuditLog) -> None:
    _tamper(audit, "DELETE FROM records WHERE seq = 2")
    verdict = audit.verify()
    assert not verdict.ok and verdict.seq == 2 and "missing" in str(verdict.problem)


def test_swapped_records_are_named(audit: AuditLog) -> None:
    _tamper(
        audit,
        "UPDATE records SET seq = -1 WHERE seq = 2",
        "UPDATE records SET seq = 2 WHERE seq = 4",
        "UPDATE records SET seq = 4 WHERE seq = -1",
    )
    verdict = audit.verify()
    assert not verdict.ok and verdict.seq == 2


def test_records_cut_from_the_end_are_found(audit: AuditLog) -> None:
    _tamper(audit, "DELETE FROM records WHERE seq >= 4")
    verdict = audit.verify()
    assert not verdict.ok and "4 to 5 are missing" in str(verdict.problem)


def test_the_audit_export_is_jsonl_since_a_time(audit: AuditLog, tmp_path: Path) -> None:
    first = next(audit.records())
    later = audit.append("bob", "sign-in", "bob")
    out = tmp_path / "audit.jsonl"
    with out.open("w") as fh:
        assert audit.export(fh) == 6
    lines = out.read_text().splitlines()
    assert '"actor": "ann"' in lines[0] and first.hash in lines[0]
    with out.open("w") as fh:
        assert audit.export(fh, since=later.at) == 1
