"""The browser's session cookie: signed, with the user's id, epoch and a sign-in time.

The cookie is set HttpOnly, SameSite=Lax (and Secure behind HTTPS) by a route of the same
server (``rag.api.auth``) and read back by the pages. It carries no role or right: every
page run looks the user up again, so a disabled user, a new password (the epoch grows)
or an expired cookie ends the session at once.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from rag.errors import AuthenticationError

COOKIE_NAME = "ragchat_session"
_SALT = "ragchat-session-v1"


@dataclass(frozen=True)
class SessionClaims:
    """What a valid cookie says: who signed in, at which epoch, from which provider."""

    user_id: str
    epoch: int
    via: str
    groups: frozenset[str] = frozenset()


class SessionSigner:
    """Signs and checks session cookies with a secret; ``ttl_s`` bounds their age."""

    def __init__(self, secret: str, ttl_s: float) -> None:
        if len(secret) < 32:
            raise ValueError("the session secret needs at least 32 characters")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._signer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.ttl_s = ttl_s

    def sign(self, claims: SessionClaims) -> str:
        """A cookie value for ``claims``."""
        return str(
            self._signer.dumps(
                {
                    "u": claims.user_id,
                    "e": claims.epoch,
                    "v": claims.via,
                    "g": sorted(claims.groups),
                }
            )
        )

    def check(self, value: str) -> SessionClaims:
        """The claims of a cookie.

        Raises:
            AuthenticationError: tampered with, malformed or expired.
        """
        try:
            data = self._signer.loads(value, max_age=int(self.ttl_s))
        except SignatureExpired:
            raise AuthenticationError("the session has expired; sign in again") from None
        except BadSignature:
            raise AuthenticationError("the session cookie is not valid; sign in again") from None
        try:
            return SessionClaims(
                str(data["u"]), int(data["e"]), str(data["v"]), frozenset(map(str, data["g"]))
            )
        except (KeyError, TypeError, ValueError):
            raise AuthenticationError("the session cookie is not valid; sign in again") from None


def session_secret(configured: str | None, data_dir: Path) -> str:
    """RAG_SESSION_SECRET, or a random one kept in the data folder (mode 0600).

    Every process of one installation reads the same file, so a cookie signed by one
    server process is valid in another.
    """
    if configured:
        return configured
    path = data_dir / "session.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # written meanwhile by another process
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(secret)
    return secret
