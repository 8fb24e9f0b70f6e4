"""Users, collections, memberships and API keys, in the app database (SQLite, WAL).

Passwords are hashed with argon2id (``argon2-cffi``'s defaults, RFC 9106's low-memory
profile). API keys are 256-bit random secrets stored as their SHA-256: a slow password hash
buys nothing for a secret nobody can guess, and every API request checks one. A user's
``epoch`` grows when the user is disabled or gets a new password, which ends every session
signed before (``rag.access.sessions``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rag.access.principal import DEFAULT_COLLECTION, LOCAL_USER, Principal, Right, Role
from rag.errors import InvalidInputError, NotFoundError
from rag.sqlite import immediate, open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    password TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    provider TEXT NOT NULL DEFAULT 'local',
    subject TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (provider, subject)
);
CREATE TABLE IF NOT EXISTS collections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    owner TEXT NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    collection TEXT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'group', 'everyone')),
    member TEXT NOT NULL,
    access TEXT NOT NULL CHECK (access IN ('viewer', 'editor')),
    PRIMARY KEY (collection, kind, member)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    collections TEXT,
    read_only INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys(user_id);
"""

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_PREFIX = "rck_"
_KEY = re.compile(r"^rck_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")
# last_used_at is written at most this often per key (every request reads a key).
_TOUCH_EVERY_S = 60.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class User:
    """An account; ``provider`` is local (a password), oidc or header (``subject`` set)."""

    id: str
    name: str
    role: Role
    disabled: bool
    provider: str
    subject: str | None
    epoch: int
    created_at: str
    has_password: bool = False

    def principal(self, groups: frozenset[str] = frozenset(), via: str = "password") -> Principal:
        """The user as a signed-in caller."""
        return Principal(self.id, self.name, self.role, groups=groups, via=via)

    def to_json(self) -> dict[str, object]:
        """The user as ``users list --json`` and the admin page show it (no secrets)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "disabled": self.disabled,
            "provider": self.provider,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class Member:
    """One grant on a collection: a user (by id), a group (by name) or everyone signed in."""

    kind: str  # user, group, everyone
    member: str
    right: Right


@dataclass(frozen=True)
class Collection:
    """A collection (knowledge base) and who may use it besides its owner."""

    id: str
    name: str
    owner: str  # a user id
    created_at: str
    members: tuple[Member, ...] = ()

    def right_of(self, principal: Principal) -> Right | None:
        """What ``principal`` may do with this collection by ownership or membership."""
        if principal.is_admin or principal.user_id == self.owner:
            return Right.EDITOR
        best: Right | None = None
        for grant in self.members:
            if (
                (grant.kind == "user" and grant.member == principal.user_id)
                or (grant.kind == "group" and grant.member in principal.groups)
                or grant.kind == "everyone"
            ):
                if grant.right is Right.EDITOR:
                    return Right.EDITOR
                best = Right.VIEWER
        return best

    def to_json(self, names: dict[str, str] | None = None) -> dict[str, object]:
        """The collection as the API and ``collections list --json`` show it."""
        names = names or {}
        return {
            "id": self.id,
            "name": self.name,
            "owner": names.get(self.owner, self.owner),
            "created_at": self.created_at,
            "members": [
                {
                    "kind": m.kind,
                    "member": names.get(m.member, m.member) if m.kind == "user" else m.member,
                    "right": str(m.right),
                }
                for m in self.members
            ],
        }


@dataclass(frozen=True)
class ApiKey:
    """An API key's record (its secret is shown once, at creation, and never stored)."""

    id: str
    user_id: str
    name: str
    collections: frozenset[str] | None
    read_only: bool
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def to_json(self, user_name: str | None = None) -> dict[str, object]:
        """The key as ``keys list --json`` and the admin page show it (no secret)."""
        return {
            "id": self.id,
            "user": user_name or self.user_id,
            "name": self.name,
            "collections": sorted(self.collections) if self.collections is not None else None,
            "read_only": self.read_only,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
            "revoked_at": self.revoked_at,
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Accounts:
    """The app database: users, collections, members, API keys.

    Safe to share between threads; several processes may open the same file.
    """

    def __init__(self, path: Path, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.RLock()
        self._db = open_db(path, _SCHEMA, autocommit=True, foreign_keys=True)
        self._touched: dict[str, float] = {}
        # A hash to verify against when the user does not exist: a sign-in for an unknown
        # name takes as long as one with a wrong password.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, immediate(self._db) as db:
            yield db

    # Users ----------------------------------------------------------------------------

    _USER_COLUMNS = (
        "id, name, role, disabled, provider, subject, epoch, created_at, password IS NOT NULL"
    )

    def _user_row(self, row: tuple[object, ...]) -> User:
        id_, name, role, disabled, provider, subject, epoch, created, has_pw = row
        return User(
            str(id_),
            str(name),
            Role(str(role)),
            bool(disabled),
            str(provider),
            None if subject is None else str(subject),
            int(epoch),  # type: ignore[call-overload]
            str(created),
            bool(has_pw),
        )

    def users(self) -> list[User]:
        """Every account, by name."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self._USER_COLUMNS} FROM users ORDER BY name COLLATE NOCASE"
            ).fetchall()
        return [self._user_row(r) for r in rows]

    def find_user(self, key: str) -> User | None:
        """An account by name (any case) or id, None if there is none."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._USER_COLUMNS} FROM users WHERE name = ? OR id = ?", (key, key)
            ).fetchone()
        return None if row is None else self._user_row(row)

    def user(self, key: str) -> User:
        """An account by name or id (raises ``NotFoundError``)."""
        found = self.find_user(key)
        if found is None:
            raise NotFoundError("user", key)
        return found

    def add_user(
        self,
        name: str,
        role: Role | str,
        password: str | None = None,
        *,
        provider: str = "local",
        subject: str | None = None,
    ) -> User:
        """Create an account; a local account needs a password (at least 8 characters).

        Raises:
            InvalidInputError: a bad name, role or password, or the name is taken.
        """
        if not _USER_NAME.match(name):
            raise InvalidInputError(
                "name", "1-64 letters, digits and . _ @ + - (starting with a letter or digit)"
            )
        role = _role(role)
        digest = None
        if provider == "local":
            digest = self._hasher.hash(_checked_password(password))
        user_id = LOCAL_USER if provider == "none" else "u" + uuid.uuid4().hex[:12]
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO users (id, name, role, password, provider, subject, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user_id, name, str(role), digest, provider, subject, _now()),
                )
        except sqlite3.IntegrityError:
            raise InvalidInputError("name", f"a user named {name!r} exists") from None
        return self.user(user_id)

    def ensure_local(self) -> User:
        """The local user of RAG_AUTH=none (an admin), created on first need."""
        found = self.find_user(LOCAL_USER)
        if found is not None:
            return found
        try:
            return self.add_user(LOCAL_USER, Role.ADMIN, provider="none")
        except InvalidInputError:  # created meanwhile by another process
            return self.user(LOCAL_USER)

    def external_user(
        self, provider: str, subject: str, name: str, role: Role | str = Role.MEMBER
    ) -> User:
        """The account of a provider's identity (OIDC ``sub``, proxy header).

        Created with ``role`` at its first sign-in; the name is the provider's, made unique
        if taken.
        """
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._USER_COLUMNS} FROM users WHERE provider = ? AND subject = ?",
                (provider, subject),
            ).fetchone()
        if row is not None:
            return self._user_row(row)
        base = re.sub(r"[^A-Za-z0-9._@+-]+", "-", name).strip("-._@+")[:56] or "user"
        for attempt in range(20):
            candidate = base if attempt == 0 else f"{base}-{secrets.token_hex(2)}"
            try:
                return self.add_user(candidate, role, provider=provider, subject=subject)
            except InvalidInputError:
                with self._lock:  # taken: by this very identity meanwhile, or by another
                    row = self._db.execute(
                        f"SELECT {self._USER_COLUMNS} FROM users "
                        "WHERE provider = ? AND subject = ?",
                        (provider, subject),
                    ).fetchone()
                if row is not None:
                    return self._user_row(row)
        raise InvalidInputError("name", f"no free user name for {name!r}")

    def set_role(self, key: str, role: Role | str) -> User:
        """Change a user's role."""
        user = self.user(key)
        with self._tx() as db:
            db.execute("UPDATE users SET role = ? WHERE id = ?", (str(_role(role)), user.id))
        return self.user(user.id)

    def set_disabled(self, key: str, disabled: bool = True) -> User:
        """Disable (or enable) a user; disabling ends the user's sessions."""
        user = self.user(key)
        with self._tx() as db:
            db.execute(
                "UPDATE users SET disabled = ?, epoch = epoch + 1 WHERE id = ?",
                (int(disabled), user.id),
            )
        return self.user(user.id)

    def set_password(self, key: str, password: str) -> User:
        """Give a local user a new password; the user's sessions end."""
        user = self.user(key)
        if user.provider != "local":
            raise InvalidInputError("user", f"{user.name} signs in with {user.provider}")
        digest = self._hasher.hash(_checked_password(password))
        with self._tx() as db:
            db.execute(
                "UPDATE users SET password = ?, epoch = epoch + 1 WHERE id = ?", (digest, user.id)
            )
        return self.user(user.id)

    def check_password(self, name: str, password: str) -> User | None:
        """The enabled local user with this name and password, else None (same cost either way)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._USER_COLUMNS}, password FROM users WHERE name = ? "
                "AND provider = 'local'",
                (name,),
            ).fetchone()
        digest = str(row[-1]) if row is not None and row[-1] is not None else self._dummy
        try:
            self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        user = self._user_row(row[:-1])
        if user.disabled:
            return None
        if self._hasher.check_needs_rehash(digest):
            with self._tx() as db:
                db.execute(
                    "UPDATE users SET password = ? WHERE id = ?",
                    (self._hasher.hash(password), user.id),
                )
        return user

    # Collections ----------------------------------------------------------------------

    def _members(self, collection_id: str) -> tuple[Member, ...]:
        rows = self._db.execute(
            "SELECT kind, member, access FROM members WHERE collection = ? ORDER BY kind, member",
            (collection_id,),
        ).fetchall()
        return tuple(Member(str(k), str(m), Right(str(a))) for k, m, a in rows)

    def collections(self) -> list[Collection]:
        """Every collection with its members, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, owner, created_at FROM collections ORDER BY name COLLATE NOCASE"
            ).fetchall()
            return [
                Collection(str(i), str(n), str(o), str(c), self._members(str(i)))
                for i, n, o, c in rows
            ]

    def find_collection(self, key: str) -> Collection | None:
        """A collection by name (any case) or id, None if there is none."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, owner, created_at FROM collections WHERE name = ? OR id = ?",
                (key, key),
            ).fetchone()
            if row is None:
                return None
            return Collection(
                str(row[0]), str(row[1]), str(row[2]), str(row[3]), self._members(str(row[0]))
            )

    def create_collection(self, name: str, owner_id: str, *, collection_id: str = "") -> Collection:
        """A new, empty collection owned by ``owner_id``.

        Raises:
            InvalidInputError: a bad or taken name.
        """
        if not _COLLECTION_NAME.match(name):
            raise InvalidInputError(
                "name", "1-64 letters, digits and . _ - (starting with a letter or digit)"
            )
        new_id = collection_id or "c" + uuid.uuid4().hex[:12]
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO collections (id, name, owner, created_at) VALUES (?, ?, ?, ?)",
                    (new_id, name, owner_id, _now()),
                )
        except sqlite3.IntegrityError:
            raise InvalidInputError("name", f"a collection named {name!r} exists") from None
        found = self.find_collection(new_id)
        assert found is not None
        return found

    def ensure_default(self, owner_id: str) -> Collection:
        """The default collection (the index from before collections), created on first need."""
        found = self.find_collection(DEFAULT_COLLECTION)
        if found is not None:
            return found
        try:
            return self.create_collection(
                DEFAULT_COLLECTION, owner_id, collection_id=DEFAULT_COLLECTION
            )
        except InvalidInputError:  # created meanwhile by another process
            found = self.find_collection(DEFAULT_COLLECTION)
            assert found is not None
            return found

    def delete_collection(self, collection_id: str) -> None:
        """Forget a collection and its members (its documents are the caller's to delete)."""
        with self._tx() as db:
            db.execute("DELETE FROM collections WHERE id = ?", (collection_id,))

    def share(self, collection_id: str, kind: str, member: str, right: Right | str) -> None:
        """Grant (or change) a user's, a group's or everyone's right on a collection."""
        if kind not in ("user", "group", "everyone"):
            raise InvalidInputError("kind", "user, group or everyone")
        try:
            right = Right(str(right))
        except ValueError:
            raise InvalidInputError("right", "viewer or editor") from None
        with self._tx() as db:
            db.execute(
                "INSERT INTO members (collection, kind, member, access) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (collection, kind, member) DO UPDATE SET access = excluded.access",
                (collection_id, kind, member if kind != "everyone" else "*", str(right)),
            )

    def unshare(self, collection_id: str, kind: str, member: str) -> bool:
        """Take a grant back; whether there was one."""
        with self._tx() as db:
            gone = db.execute(
                "DELETE FROM members WHERE collection = ? AND kind = ? AND member = ?",
                (collection_id, kind, member if kind != "everyone" else "*"),
            ).rowcount
        return gone > 0

    # API keys -------------------------------------------------------------------------

    _KEY_COLUMNS = "id, user_id, name, collections, read_only, created_at, last_used_at, revoked_at"

    @staticmethod
    def _key_row(row: tuple[object, ...]) -> ApiKey:
        id_, user_id, name, cols, read_only, created, used, revoked = row
        collections = None if cols is None else frozenset(json.loads(str(cols)))
        return ApiKey(
            str(id_),
            str(user_id),
            str(name),
            collections,
            bool(read_only),
            str(created),
            None if used is None else str(used),
            None if revoked is None else str(revoked),
        )

    def create_key(
        self,
        user_id: str,
        name: str = "",
        *,
        collections: frozenset[str] | None = None,
        read_only: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key for a user: its record and its secret (shown once, never stored)."""
        key_id = "k" + secrets.token_hex(5)[:9]
        secret = secrets.token_urlsafe(32)
        token = f"{KEY_PREFIX}{key_id}_{secret}"
        cols = None if collections is None else json.dumps(sorted(collections))
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, user_id, name, digest, collections, read_only, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, user_id, name, _digest(secret), cols, int(read_only), _now()),
            )
        return self.key(key_id), token

    def keys(self, user_id: str | None = None) -> list[ApiKey]:
        """Keys, newest first (of one user, or all)."""
        query = f"SELECT {self._KEY_COLUMNS} FROM api_keys"
        args: tuple[str, ...] = ()
        if user_id is not None:
            query += " WHERE user_id = ?"
            args = (user_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at DESC, id", args).fetchall()
        return [self._key_row(r) for r in rows]

    def key(self, key_id: str) -> ApiKey:
        """A key's record by id (raises ``NotFoundError``)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError("API key", key_id)
        return self._key_row(row)

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key (it answers 401 from now on); revoking twice changes nothing."""
        with self._tx() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (_now(), key_id),
            )
        return self.key(key_id)

    def key_for(self, token: str) -> ApiKey | None:
        """The active key whose secret is ``token``, else None; records its use."""
        found = _KEY.match(token.strip())
        if found is None:
            return None
        key_id, secret = found.groups()
        with self._lock:
            row = self._db.execute(
                f"SELECT {self._KEY_COLUMNS}, digest FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        if row is None or not hmac.compare_digest(str(row[-1]), _digest(secret)):
            return None
        key = self._key_row(row[:-1])
        if not key.active:
            return None
        now = time.monotonic()
        if now - self._touched.get(key.id, -_TOUCH_EVERY_S) >= _TOUCH_EVERY_S:
            self._touched[key.id] = now
            with self._tx() as db:
                db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (_now(), key.id))
        return key


def _role(role: Role | str) -> Role:
    try:
        return Role(str(role))
    except ValueError:
        raise InvalidInputError("role", "admin, member or viewer") from None


def _checked_password(password: str | None) -> str:
    if password is None or len(password) < 8:
        raise InvalidInputError("password", "at least 8 characters")
    if len(password) > 1024:
        raise InvalidInputError("password", "at most 1024 characters")
    return password
