"""Sign-in and sign-out for the browser: the routes that set and clear the session cookie.

The pages cannot set an HttpOnly cookie (they run over a websocket), so a plain HTML form
posts here; the answer is a redirect back to the pages with the cookie set, and the new
page session reads it (``st.context.cookies``). Password checks, lockouts and the audit
record are the access service's; these routes only translate between HTTP and it.

Mounted at the server's top level (``/auth/signin``, ``/auth/signout``): ``/auth/login``,
``/auth/logout`` and ``/oauth2callback`` are Streamlit's own (``st.login``) and are left
alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from rag.access.sessions import COOKIE_NAME, session_secret
from rag.errors import AuthenticationError, ConfigError, RagError, RateLimitedError
from rag.settings import Settings, load_settings

logger = logging.getLogger(__name__)

SIGNIN_PATH = "/auth/signin"
SIGNOUT_PATH = "/auth/signout"
# Where the pages read the outcome of a failed sign-in (st.query_params).
OUTCOME_PARAM = "signin"


def same_origin(request: Request) -> bool:
    """Whether a form post comes from a page of this server (login CSRF).

    Browsers send ``Origin`` on every cross-site POST; a post without one (curl, an old
    browser) is allowed, since it carries no cookie of ours a third site could ride on.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _back(outcome: str | None = None) -> RedirectResponse:
    return RedirectResponse(f"/?{OUTCOME_PARAM}={outcome}" if outcome else "/", status_code=303)


def auth_routes(get_service: Callable[[], Any]) -> list[Route]:
    """The sign-in and sign-out routes over the service ``get_service()`` returns."""

    async def signin(request: Request) -> Response:
        if not same_origin(request):
            return Response("sign-in refused: the form came from another site", status_code=403)
        form = await request.form()
        name, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
        address = request.client.host if request.client else ""
        try:
            service = get_service()
            _, cookie = service.access.sign_in(name, password, address)
        except RateLimitedError as exc:
            logger.info("sign-in of %r refused: %s", name, exc.limit)
            return _back("locked")
        except AuthenticationError:
            return _back("failed")
        except RagError as exc:  # no service (a bad setting): the page says why
            logger.warning("sign-in impossible: %s", exc)
            return _back("unavailable")
        response = _back()
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=int(service.settings.session_hours * 3600),
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return response

    async def signout(request: Request) -> Response:
        if not same_origin(request):
            return Response("sign-out refused: the form came from another site", status_code=403)
        response = _back()
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="lax")
        return response

    return [
        Route(SIGNIN_PATH, signin, methods=["POST"]),
        Route(SIGNOUT_PATH, signout, methods=["POST"]),
    ]


def streamlit_secrets() -> dict[str, Any] | None:
    """Streamlit's ``[auth]`` secrets for ``st.login`` from RAG_OIDC_* (None: not set).

    Without RAG_OIDC_METADATA_URL, a ``.streamlit/secrets.toml`` ``[auth]`` section may
    configure it instead. The cookie secret is the installation's session secret, so every
    server process accepts the others' sign-ins.
    """
    try:
        settings = load_settings()
    except RagError:  # reported by the service on every request
        return None
    if settings.auth != "oidc" or not settings.oidc_metadata_url:
        return None
    assert settings.oidc_client_id and settings.oidc_client_secret  # checked by Settings
    configured = settings.session_secret
    return {
        "auth": {
            "redirect_uri": settings.oidc_redirect_uri,
            "cookie_secret": session_secret(
                configured.get_secret_value() if configured else None, settings.data_dir
            ),
            "client_id": settings.oidc_client_id,
            "client_secret": settings.oidc_client_secret.get_secret_value(),
            "server_metadata_url": settings.oidc_metadata_url,
            "client_kwargs": {"scope": "openid email profile", "prompt": "login"},
        }
    }


def check_proxy_setup(settings: Settings) -> None:
    """Refuse to serve RAG_AUTH=header while uvicorn rewrites client addresses.

    uvicorn replaces a loopback peer's address with its X-Forwarded-For header unless
    FORWARDED_ALLOW_IPS is empty; the trusted-proxy check would then compare an address
    anyone can write. The variable is read before this module is imported, so it must be
    set by whoever starts the server (``make run`` and the Dockerfile do).

    Raises:
        ConfigError: RAG_AUTH=header and FORWARDED_ALLOW_IPS is not empty.
    """
    if settings.auth == "header" and os.environ.get("FORWARDED_ALLOW_IPS") != "":
        raise ConfigError(
            "RAG_AUTH",
            "header sign-in needs the server started with FORWARDED_ALLOW_IPS='' (else "
            "uvicorn takes client addresses from X-Forwarded-For and anyone could pass as "
            "the proxy)",
        )
