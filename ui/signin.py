"""Who uses the pages: the local user, a password session, an OIDC sign-in or a proxy's user.

Every page run asks the access service again (a disabled user or a new password ends the
session at the next click); the pages never decide what a user may read. With
``RAG_AUTH=password`` the sign-in form posts to ``/auth/signin`` (``rag.api.auth``), which
sets the HttpOnly session cookie; ``oidc`` goes through Streamlit's ``st.login``; ``header``
believes the proxy's header only from RAG_TRUSTED_PROXIES.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from rag.access.principal import Principal, principal_json
from rag.access.sessions import COOKIE_NAME
from rag.api.auth import OUTCOME_PARAM, SIGNIN_PATH, SIGNOUT_PATH
from rag.errors import AuthenticationError
from rag.service.core import RagService
from ui.render import escape_markdown

_OIDC_KEY = "ragchat_oidc_caller"
_OUTCOMES = {
    "failed": "Wrong user name or password.",
    "locked": "Too many failed sign-ins: wait a few minutes and try again.",
    "unavailable": "Sign-in is unavailable: the server could not start its service.",
}


def page_caller(service: RagService) -> Principal | None:
    """The caller of this page run; None when nobody is signed in yet.

    Raises:
        AuthenticationError: what was presented is not valid (a tampered or expired
            cookie, a disabled account, a proxy header from an untrusted address).
    """
    access = service.access
    if access.mode == "none":
        return access.local()
    if access.mode == "password":
        cookie = st.context.cookies.get(COOKIE_NAME)
        return access.session(cookie) if cookie else None
    if access.mode == "header":
        # st.context.ip_address is None for a loopback peer (and the server runs with
        # FORWARDED_ALLOW_IPS='' so no X-Forwarded-For rewrote it).
        address = st.context.ip_address or "127.0.0.1"
        return access.from_proxy(dict(st.context.headers), address)
    return _oidc_caller(service)


def _oidc_caller(service: RagService) -> Principal | None:
    user: Any = st.user
    if not user.get("is_logged_in"):
        return None
    subject = str(user.get("sub") or "")
    cached = st.session_state.get(_OIDC_KEY)
    if cached is not None and cached[0] == subject:
        # The sign-in was recorded at this session's first run; later runs check the
        # account is still enabled and take its current role.
        return service.access.revive(cached[1])
    claim = service.settings.oidc_groups_claim
    groups = user.get(claim) or []
    if isinstance(groups, str):
        groups = [groups]
    name = str(user.get("email") or user.get("name") or subject)
    caller, _ = service.access.sign_in_external(
        "oidc", subject, name, [str(g) for g in groups], st.context.ip_address or ""
    )
    st.session_state[_OIDC_KEY] = (subject, principal_json(caller))
    return caller


def signin_page(service: RagService, problem: str | None = None) -> None:
    """The sign-in page of the configured mode (``problem``: why the last one was refused)."""
    st.title("Sign in to ragchat")
    outcome = st.query_params.get(OUTCOME_PARAM)
    # The latest sign-in's outcome first: a refused old cookie must not hide it.
    if outcome in _OUTCOMES:
        st.error(_OUTCOMES[str(outcome)], icon=":material/lock:")
    elif problem:
        st.error(escape_markdown(problem), icon=":material/lock:")
    mode = service.access.mode
    if mode == "password":
        st.html(_signin_form())
        st.caption("Accounts are made by an admin (`ragchat users add NAME`).")
    elif mode == "oidc":
        st.button("Sign in with your organisation", icon=":material/login:", on_click=st.login)
    else:  # header: only the proxy can sign anyone in
        st.info(
            "This server takes its users from the reverse proxy in front of it; open it "
            "through that proxy."
        )


def _signin_form() -> str:
    # A static form (no user or document text in it): a native POST, so the route's
    # Set-Cookie lands and the new page session reads it.
    return f"""
<form method="post" action="{SIGNIN_PATH}" style="max-width:22rem">
  <label for="ragchat-username">User name</label><br>
  <input id="ragchat-username" name="username" autocomplete="username" required
         style="width:100%;margin-bottom:0.6rem"><br>
  <label for="ragchat-password">Password</label><br>
  <input id="ragchat-password" name="password" type="password"
         autocomplete="current-password" required style="width:100%;margin-bottom:0.8rem"><br>
  <button type="submit">Sign in</button>
</form>"""


def account_box(service: RagService, caller: Principal) -> None:
    """The sidebar's "signed in as" line and the sign-out control."""
    mode = service.access.mode
    if mode == "none":
        return
    with st.sidebar:
        st.caption(f"Signed in as **{escape_markdown(caller.name)}** · {caller.role}")
        if mode == "password":
            st.html(
                f'<form method="post" action="{SIGNOUT_PATH}">'
                f'<button type="submit" aria-label="Sign out">Sign out</button></form>'
            )
        elif mode == "oidc":
            st.button("Sign out", icon=":material/logout:", on_click=_oidc_signout)


def _oidc_signout() -> None:
    st.session_state.pop(_OIDC_KEY, None)
    st.logout()


def refusal(exc: AuthenticationError) -> str:
    """What the sign-in page says about a refused session."""
    return f"{exc.reason[:1].upper()}{exc.reason[1:]}."
