"""Sign-in and per-user isolation in the pages, in Debian's Chromium.

Three servers' worth of behaviour a user would notice:

- password sign-in (RAG_AUTH=password): the error for a wrong password, the HttpOnly session
  cookie, refusal of a tampered or foreign-signed cookie, sign-out, and a user disabled while
  signed in;
- isolation: five users, ten tabs signed in at once (two per user), each seeing only its
  user's documents, citations and conversations;
- OIDC (RAG_AUTH=oidc) against oidc-provider-mock: a groups claim opens a collection shared
  with that group, and only to members of the group.

Answers come from the stub endpoint (tests/faultserver.py); the embedding model is real.
The browser may reach 127.0.0.1 only. A failure leaves screenshots in artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from rag.access.sessions import COOKIE_NAME, SessionClaims, SessionSigner
from rag.llm.local import free_port
from rag.service.components import open_service
from rag.settings import load_settings
from tests import faultserver
from tests.integration import browser as served
from tests.integration.browser import ARTIFACTS, ServedApp, streamlit_app

# expect() has its own 5 s default; a Streamlit rerun on a busy 2-core machine can take longer.
expect.set_options(timeout=20_000)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SIGNIN_TITLE = "Sign in to ragchat"
BAD_COOKIE = "The session cookie is not valid; sign in again."
DISABLED = "This account is disabled or gone."
WRONG_PASSWORD = "Wrong user name or password."
ALICE, ALICE_PASSWORD = "alice", "alice-correct-horse-battery"


@dataclass(frozen=True)
class Member:
    """A user of the isolation test, with one collection holding one canary document."""

    name: str
    word: str

    @property
    def password(self) -> str:
        return f"pw-{self.name}-{self.word}-staple"

    @property
    def filename(self) -> str:
        return f"{self.word}-ledger.md"

    @property
    def code(self) -> str:
        return f"{self.word.upper()}-7731"

    @property
    def collection(self) -> str:
        return f"{self.word}-shelf"

    @property
    def canaries(self) -> tuple[str, ...]:
        """Strings that only this user's pages may ever show."""
        return (self.filename, self.code, self.collection)

    def question(self, about: Member, tab: int) -> str:
        return f"What is the {about.word} vault code? (asked by {self.name} in tab {tab})"


MEMBERS = [
    Member(f"u{i}", word) for i, word in enumerate(["amber", "birch", "cobalt", "dune", "ember"], 1)
]
# A document of the default collection, which is shared with nobody: no member may see it.
ADMIN_ONLY = ("onyx-ledger.md", "ONYX-0000")

OIDC_MEMBER = ("carol@corp", {"email": "carol@corp.example", "name": "Carol", "groups": ["staff"]})
OIDC_OUTSIDER = ("dave@corp", {"email": "dave@corp.example", "name": "Dave", "groups": ["sales"]})
STAFF_DOC = ("heron-handbook.md", "HERON-5150", "staff-handbook")  # file, code, collection


def _document(folder: Path, filename: str, word: str, code: str) -> Path:
    path = folder / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# The {word} vault\n\nThe {word} vault code is {code}. It opens the {word} vault in "
        f"the basement, and the {word} vault holds the ledgers of the {word} department.\n"
    )
    return path


# Servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> Iterator[faultserver.FaultServer]:
    with faultserver.FaultServer() as server:
        yield server


def _llm_env(stub: faultserver.FaultServer) -> dict[str, str]:
    return {"RAG_LLM_BASE_URL": stub.base_url, "RAG_LLM_MODEL": "stub-model"}


@pytest.fixture(scope="module")
def password_app(
    tmp_path_factory: pytest.TempPathFactory, stub: faultserver.FaultServer
) -> Iterator[tuple[ServedApp, Path]]:
    """RAG_AUTH=password: alice, and u1..u5 each owning a collection with a canary document."""
    data = tmp_path_factory.mktemp("authdata")
    sources = data / "sources"
    with open_service(load_settings(data_dir=data, auth="password"), one_shot=True) as service:
        access = service.access
        operator = access.operator()
        access.add_user(operator, ALICE, "member", ALICE_PASSWORD)
        for m in MEMBERS:
            access.add_user(operator, m.name, "member", m.password)
            access.create_collection(operator, m.collection, owner=m.name)
            doc = _document(sources / m.name, m.filename, m.word, m.code)
            report = service.ingest([doc], caller=operator, collection=m.collection)
            assert report.count("failed") == 0, report
        doc = _document(sources / "admin", ADMIN_ONLY[0], "onyx", ADMIN_ONLY[1])
        assert service.ingest([doc], caller=operator).count("failed") == 0  # the default one
    with streamlit_app(data, RAG_AUTH="password", **_llm_env(stub)) as url:
        yield url, data


def _wait_ok(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within 60 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """oidc-provider-mock on a free loopback port; clients must register first."""
    log = tmp_path_factory.mktemp("oidcmock") / "oidc-mock.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oidc_provider_mock",
             "--host", "127.0.0.1", "--port", str(port), "--require-registration"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ok(f"{base}/.well-known/openid-configuration", proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def oidc_app(
    tmp_path_factory: pytest.TempPathFactory, stub: faultserver.FaultServer, oidc: str
) -> Iterator[ServedApp]:
    """RAG_AUTH=oidc, registered at the mock; a collection shared with the group staff."""
    data = tmp_path_factory.mktemp("oidcdata")
    filename, code, collection = STAFF_DOC
    with open_service(load_settings(data_dir=data, auth="oidc"), one_shot=True) as service:
        operator = service.access.operator()
        service.access.create_collection(operator, collection)
        service.access.share(operator, collection, "group", "staff", "viewer")
        doc = _document(data / "sources", filename, "heron", code)
        assert service.ingest([doc], caller=operator, collection=collection).count("failed") == 0
    # The redirect URI is registered at the provider before the server starts, so the port
    # is chosen here and handed to the launcher.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    registered = (
        httpx.post(f"{oidc}/oauth2/clients", json={"redirect_uris": [f"{base}/oauth2callback"]})
        .raise_for_status()
        .json()
    )
    for subject, claims in (OIDC_MEMBER, OIDC_OUTSIDER):
        httpx.put(f"{oidc}/users/{subject}", json=claims).raise_for_status()
    env = {
        "RAG_AUTH": "oidc",
        "RAG_OIDC_METADATA_URL": f"{oidc}/.well-known/openid-configuration",
        "RAG_OIDC_CLIENT_ID": registered["client_id"],
        "RAG_OIDC_CLIENT_SECRET": registered["client_secret"],
        "RAG_OIDC_REDIRECT_URI": "http://127.0.0.1:{port}/oauth2callback",
        **_llm_env(stub),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(served, "free_port", lambda: port)
        with streamlit_app(data, **env) as url:
            mp.undo()
            assert url == base
            yield url


# Browser helpers ------------------------------------------------------------------------------


def _only_loopback(route: Route) -> None:
    if (urlsplit(route.request.url).hostname or "") in LOOPBACK:
        route.continue_()
    else:  # nothing leaves the machine (the mock's pages link a CDN stylesheet)
        route.abort()


def _context(browser: Browser, url: str) -> BrowserContext:
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 900})
    context.route("**/*", _only_loopback)
    context.set_default_timeout(20_000)
    return context


@contextmanager
def _evidence(name: str, pages: Sequence[Page]) -> Iterator[None]:
    """On a failure, a full-page screenshot of every page into artifacts/screenshots/."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(pages):
            if not page.is_closed():
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}-{i}.png"), full_page=True)
        raise


def _submit_password(page: Page, name: str, password: str) -> None:
    page.locator("input[name=username]").fill(name)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


def _expect_signed_in(page: Page, name: str) -> None:
    expect(page.get_by_test_id("stSidebar")).to_contain_text(f"Signed in as {name} ·")


def _expect_signin_page(page: Page, problem: str | None = None) -> None:
    expect(page.get_by_role("heading", name=SIGNIN_TITLE)).to_be_visible()
    if problem:
        expect(page.get_by_text(problem)).to_be_visible()
    expect(page.get_by_text("Signed in as")).to_have_count(0)


def _session_cookie(context: BrowserContext) -> dict | None:
    return next((c for c in context.cookies() if c["name"] == COOKIE_NAME), None)


def _wait_for_text(page: Page, needle: str) -> str:
    """The page's HTML once it holds ``needle`` (table cells live in the grid's ARIA table)."""
    deadline = time.monotonic() + 20
    while True:
        html = page.content()
        if needle in html:
            return html
        if time.monotonic() > deadline:
            pytest.fail(f"{needle!r} never appeared on {page.url}")
        page.wait_for_timeout(200)


def _leaks(html: str, forbidden: Sequence[str]) -> list[str]:
    return [s for s in forbidden if s in html]


# 1. Password sign-in -------------------------------------------------------------------------


def test_password_signin_cookie_and_refusals(
    browser: Browser, password_app: tuple[ServedApp, Path]
) -> None:
    url, data = password_app
    context = _context(browser, url)
    page = context.new_page()
    with _evidence("password-signin", [page]):
        page.goto("/")
        _expect_signin_page(page)

        # A wrong password comes back to the form with the error, and no cookie.
        _submit_password(page, ALICE, "not-her-password")
        page.wait_for_url(re.compile(r"/\?signin=failed$"))
        _expect_signin_page(page, WRONG_PASSWORD)
        assert _session_cookie(context) is None

        _submit_password(page, ALICE, ALICE_PASSWORD)
        _expect_signed_in(page, ALICE)
        cookie = _session_cookie(context)
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/"
        assert COOKIE_NAME not in page.evaluate("document.cookie")  # hidden from scripts

        page.reload()  # a new page session: the cookie carries the sign-in
        _expect_signed_in(page, ALICE)

        # One character changed, in the signed data and in the signature: refused.
        value = cookie["value"]
        payload_end = value.index(".")
        for at in (payload_end // 2, value.rindex(".") + 1):
            swapped = "A" if value[at] != "A" else "B"
            context.add_cookies([{**cookie, "value": value[:at] + swapped + value[at + 1 :]}])
            page.reload()
            _expect_signin_page(page, BAD_COOKIE)

        # The same claims signed with another secret: refused.
        _, claims = URLSafeTimedSerializer("any").loads_unsafe(value)
        assert isinstance(claims, dict), claims
        forged = SessionSigner("another-installation-secret-0123456789", 3600).sign(
            SessionClaims(str(claims["u"]), int(claims["e"]), str(claims["v"]))
        )
        context.add_cookies([{**cookie, "value": forged}])
        page.reload()
        _expect_signin_page(page, BAD_COOKIE)

        # The genuine cookie is still good: the refusals were about the changes.
        context.add_cookies([cookie])
        page.reload()
        _expect_signed_in(page, ALICE)

        # Sign-out clears the cookie and shows the sign-in page.
        page.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").click()
        _expect_signin_page(page)
        assert _session_cookie(context) is None
        page.reload()
        _expect_signin_page(page)

        # Disabled from the command line while signed in: refused at the next click and at
        # the next page load, and the password no longer signs in.
        _submit_password(page, ALICE, ALICE_PASSWORD)
        _expect_signed_in(page, ALICE)
        subprocess.run(
            [sys.executable, "-m", "rag.cli", "users", "disable", ALICE],
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "RAG_DATA_DIR": str(data), "RAG_AUTH": "password"},
        )
        page.get_by_test_id("stSidebar").get_by_role("link", name="Documents").click()
        _expect_signin_page(page, DISABLED)
        page.reload()
        _expect_signin_page(page, DISABLED)
        context.clear_cookies()  # (the refused cookie would be named as the problem first)
        page.goto("/")
        _submit_password(page, ALICE, ALICE_PASSWORD)
        page.wait_for_url(re.compile(r"/\?signin=failed$"))
        _expect_signin_page(page, WRONG_PASSWORD)
    context.close()


# 2. Isolation, ten tabs at once --------------------------------------------------------------


def _forbidden_for(member: Member) -> list[str]:
    """What a member's pages must never show: the other users' canaries and the admin's."""
    others = [s for m in MEMBERS if m is not member for s in m.canaries]
    return [*others, *ADMIN_ONLY]


def _citation_cards(page: Page) -> list[str]:
    answer = page.get_by_test_id("stMainBlockContainer").get_by_test_id("stChatMessage").nth(1)
    cards = answer.locator("[class*='st-key-citation-']:not([class*='-source'])")
    return cards.all_inner_texts()


def _nav(page: Page, name: str) -> None:
    """Follow a sidebar link: a rerun of the same page session, not a new page load."""
    page.get_by_test_id("stSidebar").get_by_role("link", name=name).click()


def test_isolation_between_users_in_ten_concurrent_tabs(
    browser: Browser, password_app: tuple[ServedApp, Path]
) -> None:
    url, _ = password_app
    # Two tabs per user, each its own browser context (its own cookie jar and sign-in).
    tabs = [(m, tab, _context(browser, url)) for m in MEMBERS for tab in (1, 2)]
    pages = [context.new_page() for _, _, context in tabs]
    questions: dict[tuple[str, int], str] = {}

    def strangers(member: Member) -> list[str]:
        return [q for (name, _), q in questions.items() if name != member.name]

    with _evidence("isolation", pages):
        # Every step is started in all ten tabs before any is waited for, so the server
        # serves ten signed-in sessions at once.
        for page in pages:
            page.goto("/", wait_until="commit")
        for page in pages:
            expect(page.locator("input[name=username]")).to_be_visible()
        for (member, _, _), page in zip(tabs, pages, strict=True):
            _submit_password(page, member.name, member.password)
        for (member, _, _), page in zip(tabs, pages, strict=True):
            _expect_signed_in(page, member.name)

        # Documents: exactly the user's own document and collection.
        for page in pages:
            _nav(page, "Documents")
        for (member, _, _), page in zip(tabs, pages, strict=True):
            expect(page.get_by_role("heading", name="Indexed (1)")).to_be_visible()
            html = _wait_for_text(page, member.filename)
            assert member.collection in html
            assert _leaks(html, _forbidden_for(member)) == [], (member.name, page.url)

        # Chat: tab 1 asks about its own vault, tab 2 about the next user's; all at once.
        for page in pages:
            _nav(page, "Chat")
        for (member, tab, _), page in zip(tabs, pages, strict=True):
            about = member if tab == 1 else MEMBERS[(MEMBERS.index(member) + 1) % len(MEMBERS)]
            questions[member.name, tab] = member.question(about, tab)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_enabled(timeout=60_000)
            box.fill(questions[member.name, tab])
            box.press("Enter")
        for (member, tab, _), page in zip(tabs, pages, strict=True):
            main = page.get_by_test_id("stMainBlockContainer")
            expect(main.get_by_test_id("stFeedback")).to_have_count(1, timeout=60_000)
            expect(main).to_contain_text(questions[member.name, tab])
            cards = _citation_cards(page)
            if tab == 1:  # its own vault: answered from its own document
                assert cards, f"{member.name} got no citation for its own document"
            for card in cards:
                assert member.filename in card, (member.name, tab, card)
            html = page.content()
            assert _leaks(html, _forbidden_for(member)) == [], (member.name, tab)
            assert _leaks(html, strangers(member)) == [], (member.name, tab)

        # Conversations: after a rerun, each user's first tab lists both of its tabs'
        # questions in the sidebar, and no other user's.
        firsts = [page for (_, tab, _), page in zip(tabs, pages, strict=True) if tab == 1]
        for page in firsts:
            page.get_by_test_id("stSidebar").get_by_role("button", name="New chat").click()
        for member, page in zip(MEMBERS, firsts, strict=True):
            sidebar = page.get_by_test_id("stSidebar")
            for tab in (1, 2):
                expect(sidebar).to_contain_text(questions[member.name, tab])
            html = page.content()
            assert _leaks(html, strangers(member)) == [], member.name
            assert _leaks(html, _forbidden_for(member)) == [], member.name
    for _, _, context in tabs:
        context.close()


# 3. OIDC groups ---------------------------------------------------------------------------------


def _oidc_sign_in(page: Page, oidc: str, app: str, subject: str) -> None:
    page.goto("/")
    page.get_by_role("button", name="Sign in with your organisation").click()
    page.wait_for_url(f"{oidc}/oauth2/authorize?**")
    page.locator("input[name=sub]").fill(subject)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{app}/")


def test_oidc_group_opens_a_shared_collection(
    browser: Browser, oidc_app: ServedApp, oidc: str
) -> None:
    filename, code, collection = STAFF_DOC
    member = _context(browser, oidc_app).new_page()
    outsider = _context(browser, oidc_app).new_page()
    with _evidence("oidc", [member, outsider]):
        _oidc_sign_in(member, oidc, oidc_app, OIDC_MEMBER[0])
        _expect_signed_in(member, str(OIDC_MEMBER[1]["email"]))
        member.goto("/documents")
        expect(member.get_by_role("heading", name="Indexed (1)")).to_be_visible()
        html = _wait_for_text(member, filename)
        assert collection in html

        _oidc_sign_in(outsider, oidc, oidc_app, OIDC_OUTSIDER[0])
        _expect_signed_in(outsider, str(OIDC_OUTSIDER[1]["email"]))
        outsider.goto("/documents")
        expect(outsider.get_by_text("Nothing is indexed yet")).to_be_visible()
        expect(outsider.get_by_role("heading", name="Collections")).to_be_visible()
        assert _leaks(outsider.content(), [filename, code, collection]) == []
    member.context.close()
    outsider.context.close()
