"""The sign-in routes, the proxy and OIDC settings checks, and the admin commands."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from rag.access.sessions import COOKIE_NAME
from rag.api.auth import auth_routes, check_proxy_setup, streamlit_secrets
from rag.cli import main
from rag.errors import AuthenticationError, ConfigError
from rag.service.core import RagService
from rag.settings import Settings
from tests.unit.test_service import service_in


@pytest.fixture
def signin(tmp_path: Path) -> tuple[TestClient, RagService]:
    service, _ = service_in(tmp_path, auth="password", signin_max_failures=3)
    service.access.add_user(service.access.operator(), "alice", "member", "alice-password")
    app = Starlette(routes=auth_routes(lambda: service))
    return TestClient(app, base_url="http://testserver", follow_redirects=False), service


def test_a_right_password_sets_an_httponly_lax_cookie_the_service_accepts(signin) -> None:
    client, service = signin
    done = client.post("/auth/signin", data={"username": "alice", "password": "alice-password"})
    assert done.status_code == 303 and done.headers["location"] == "/"
    cookie = done.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie and "Path=/" in cookie and "Max-Age=43200" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert service.access.session(value).name == "alice"
    tampered = value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB")
    with pytest.raises(AuthenticationError):
        service.access.session(tampered)
    out = client.post("/auth/signout")
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]


def test_wrong_passwords_redirect_with_the_outcome_then_lock(signin) -> None:
    client, _ = signin
    for _ in range(3):
        wrong = client.post("/auth/signin", data={"username": "alice", "password": "nope-nope"})
        assert wrong.headers["location"] == "/?signin=failed" and "set-cookie" not in wrong.headers
    locked = client.post("/auth/signin", data={"username": "alice", "password": "alice-password"})
    assert locked.headers["location"] == "/?signin=locked" and "set-cookie" not in locked.headers


def test_a_sign_in_posted_from_another_site_is_refused(signin) -> None:
    client, _ = signin
    refused = client.post(
        "/auth/signin",
        data={"username": "alice", "password": "alice-password"},
        headers={"origin": "https://evil.example"},
    )
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    same = client.post(
        "/auth/signin",
        data={"username": "alice", "password": "alice-password"},
        headers={"origin": "http://testserver"},
    )
    assert same.status_code == 303 and COOKIE_NAME in same.headers["set-cookie"]


def test_header_sign_in_needs_uvicorn_to_leave_client_addresses_alone(monkeypatch) -> None:
    settings = Settings(auth="header", trusted_proxies=["127.0.0.1"])
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS"):
        check_proxy_setup(settings)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    with pytest.raises(ConfigError):
        check_proxy_setup(settings)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")
    check_proxy_setup(settings)
    check_proxy_setup(Settings(auth="password"))  # other modes do not care


def test_oidc_settings_become_streamlit_auth_secrets(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAG_AUTH", "oidc")
    assert streamlit_secrets() is None  # left to .streamlit/secrets.toml
    monkeypatch.setenv(
        "RAG_OIDC_METADATA_URL", "http://127.0.0.1:9/.well-known/openid-configuration"
    )
    monkeypatch.setenv("RAG_OIDC_CLIENT_ID", "ragchat")
    monkeypatch.setenv("RAG_OIDC_CLIENT_SECRET", "s3cret")
    auth = streamlit_secrets()["auth"]
    assert auth["client_id"] == "ragchat" and auth["client_secret"] == "s3cret"
    assert auth["redirect_uri"] == "http://localhost:{port}/oauth2callback"
    assert auth["cookie_secret"] == (tmp_path / "session.key").read_text()
    monkeypatch.delenv("RAG_OIDC_CLIENT_SECRET")
    assert streamlit_secrets() is None  # a bad setting: the service reports it


def _cli(monkeypatch, capsys, data: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_AUTH", "password")
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_admin_commands_manage_users_keys_collections_and_audit(
    monkeypatch, capsys, tmp_path
) -> None:
    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return _cli(monkeypatch, capsys, tmp_path, *args, stdin=stdin)

    assert run("users", "add", "alice", stdin="alice-password\n")[0] == 0
    assert run("users", "add", "bob", "--role", "viewer", stdin="bob-password\n")[0] == 0
    code, out, _ = run("users", "list", "--json")
    roles = {u["name"]: u["role"] for u in json.loads(out)}
    assert code == 0 and roles["alice"] == "member" and roles["bob"] == "viewer"
    assert run("collections", "create", "hr", "--owner", "alice")[0] == 0
    assert run("collections", "share", "hr", "--user", "bob")[0] == 0
    code, out, _ = run("--user", "bob", "collections", "list", "--json")
    (hr,) = [c for c in json.loads(out) if c["name"] == "hr"]
    assert hr["owner"] == "alice" and hr["your_right"] == "viewer"
    assert hr["members"] == [{"kind": "user", "member": "bob", "right": "viewer"}]
    code, out, _ = run("keys", "create", "--user", "alice", "--collection", "hr", "--json")
    created = json.loads(out)
    assert code == 0 and created["key"].startswith("rck_") and created["user"]
    code, _, err = run("--user", "bob", "users", "list")
    assert code == 2 and "only an admin may" in err
    code, _, err = run("--user", "bob", "keys", "revoke", created["id"])
    assert code == 2 and "no API key" in err  # as if it did not exist
    assert run("keys", "revoke", created["id"])[0] == 0
    assert run("users", "disable", "alice")[0] == 0
    code, out, _ = run("audit", "verify")
    assert code == 0 and "intact" in out
    code, out, _ = run("audit", "export")
    actions = [json.loads(line)["action"] for line in out.splitlines()]
    assert actions[:2] == ["user added", "user added"] and "key revoked" in actions
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:  # an attacker with the file
        (trigger,) = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%UPDATE%'"
        ).fetchone()
        db.execute(f"DROP TRIGGER {trigger}")
        db.execute("UPDATE records SET actor = 'nobody' WHERE seq = 2")
    code, out, _ = run("audit", "verify")
    assert code == 1 and "record 2" in out
