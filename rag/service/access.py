"""``AccessService``: who the caller is, what it may read and change, and the audit trail.

Adapters authenticate through it (a password, a session cookie, an API key, an OIDC
identity, a proxy header) and get a ``Principal``; the other use cases ask it for the
caller's ``Scope`` and for the collection a change goes to. Every decision is made here,
so the pages, the API and the CLI cannot disagree.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rag.access.accounts import Accounts, ApiKey, Collection, User
from rag.access.audit import AuditLog, AuditRecord, Verdict
from rag.access.limits import RateLimits
from rag.access.principal import DEFAULT_COLLECTION, LOCAL, Principal, Right, Role, Scope
from rag.access.sessions import SessionClaims, SessionSigner
from rag.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuthConfig:
    """The sign-in settings the service needs (from ``Settings``)."""

    mode: str = "none"  # none, password, oidc, header
    trusted_proxies: tuple[str, ...] = ()
    user_header: str = "X-Forwarded-User"
    groups_header: str = "X-Forwarded-Groups"
    default_role: Role = Role.MEMBER
    audit_questions: bool = False


class AccessService:
    """Accounts, collections, keys, sessions, limits and audit, as use cases."""

    def __init__(
        self,
        config: AuthConfig,
        accounts: Accounts,
        audit: AuditLog,
        limits: RateLimits,
        signer: SessionSigner,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.audit_log = audit
        self.limits = limits
        self.signer = signer
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        owner = accounts.ensure_local() if config.mode == "none" else None
        # The index from before collections is the default collection: owned by the local
        # user, or by nobody who can sign in (admins manage it and may share it).
        accounts.ensure_default(owner.id if owner else _system_owner(accounts))

    @property
    def mode(self) -> str:
        """RAG_AUTH."""
        return self.config.mode

    def close(self) -> None:
        """Close the databases."""
        self.accounts.close()
        self.audit_log.close()

    # Signing in -----------------------------------------------------------------------

    def local(self) -> Principal:
        """The caller with RAG_AUTH=none; with sign-in on, there is no anonymous caller.

        Raises:
            AuthenticationError: RAG_AUTH is not none.
        """
        if self.mode != "none":
            raise AuthenticationError("sign in, or send an API key (Authorization: Bearer)")
        return LOCAL

    def operator(self) -> Principal:
        """Whoever runs the command line on the server: an admin (it reads the data folder)."""
        self.accounts.ensure_local()
        return LOCAL if self.mode == "none" else replace(LOCAL, via="cli")

    def as_user(self, name: str) -> Principal:
        """A named user, for the command line's ``--user`` (reads what that user may).

        Raises:
            NotFoundError: no such user.
            AuthenticationError: the user is disabled.
        """
        user = self.accounts.user(name)
        if user.disabled:
            raise AuthenticationError(f"user {user.name} is disabled")
        return user.principal(via="cli")

    def sign_in(self, name: str, password: str, address: str) -> tuple[Principal, str]:
        """Check a password; the caller and a session cookie value.

        Raises:
            AuthenticationError: wrong name or password, or a disabled account.
            RateLimitedError: too many failures for the account or the address.
        """
        if self.mode != "password":
            raise AuthenticationError(f"password sign-in is off (RAG_AUTH={self.mode})")
        try:
            self.limits.signin_allowed(name, address)
        except RateLimitedError as exc:
            self.record_as(name, "sign-in refused", name, {"address": address, "why": exc.limit})
            raise
        user = self.accounts.check_password(name, password)
        if user is None:
            self.limits.signin_failed(name, address)
            self.record_as(name, "sign-in failed", name, {"address": address})
            raise AuthenticationError("wrong user name or password")
        self.record_as(user.name, "sign-in", user.id, {"address": address, "via": "password"})
        return user.principal(via="password"), self._cookie(user, "password")

    def sign_in_external(
        self,
        provider: str,
        subject: str,
        name: str,
        groups: Iterable[str] = (),
        address: str = "",
    ) -> tuple[Principal, str]:
        """Sign in an identity vouched for by an OIDC provider or a trusted proxy.

        Returns the caller (its account is created at its first sign-in) and a session
        cookie value.

        Raises:
            AuthenticationError: the account is disabled.
        """
        principal, user = self._external(provider, subject, name, groups)
        self.record_as(user.name, "sign-in", user.id, {"address": address, "via": provider})
        return principal, self._cookie(user, provider, principal.groups)

    def _external(
        self, provider: str, subject: str, name: str, groups: Iterable[str]
    ) -> tuple[Principal, User]:
        if not subject:
            raise AuthenticationError(f"{provider} gave no user identity")
        user = self.accounts.external_user(provider, subject, name, self.config.default_role)
        if user.disabled:
            self.record_as(user.name, "sign-in failed", user.id, {"why": "disabled"})
            raise AuthenticationError("this account is disabled")
        return user.principal(frozenset(g for g in groups if g), via=provider), user

    def _cookie(self, user: User, via: str, groups: frozenset[str] = frozenset()) -> str:
        return self.signer.sign(SessionClaims(user.id, user.epoch, via, groups))

    def session(self, cookie: str | None) -> Principal:
        """The caller a session cookie stands for.

        Raises:
            AuthenticationError: no cookie, a tampered or expired one, a disabled user, or
                one signed before the user's password changed.
        """
        if not cookie:
            raise AuthenticationError("sign in first")
        claims = self.signer.check(cookie)
        user = self.accounts.find_user(claims.user_id)
        if user is None or user.disabled:
            raise AuthenticationError("this account is disabled or gone")
        if user.epoch != claims.epoch:
            raise AuthenticationError("the session was ended; sign in again")
        return user.principal(claims.groups, via=claims.via)

    def api_key(self, token: str) -> Principal:
        """The caller an API key stands for (the key's restrictions included).

        Raises:
            AuthenticationError: unknown, revoked, or its user is disabled.
        """
        key = self.accounts.key_for(token)
        if key is None:
            raise AuthenticationError("the API key is not valid (unknown or revoked)")
        user = self.accounts.find_user(key.user_id)
        if user is None or user.disabled:
            raise AuthenticationError("the API key's user is disabled")
        return Principal(
            user.id,
            user.name,
            user.role,
            key_id=key.id,
            key_collections=key.collections,
            read_only=key.read_only,
            via="key",
        )

    def revive(self, data: Mapping[str, Any] | None) -> Principal:
        """The caller a job was submitted by (``principal_json``), as of now.

        The user's current role counts; a user disabled or a key revoked since is refused.

        Raises:
            AuthenticationError: the user is disabled or gone, or the key revoked.
        """
        if data is None:  # a job from before users: the local user's
            return self.local() if self.mode == "none" else _refuse("the job has no owner")
        user = self.accounts.find_user(str(data["user_id"]))
        if user is None or user.disabled:
            raise AuthenticationError("the job's user is disabled or gone")
        key_id = data.get("key_id")
        if key_id is not None and not self.accounts.key(str(key_id)).active:
            raise AuthenticationError("the job's API key was revoked")
        keyed = data.get("key_collections")
        return Principal(
            user.id,
            user.name,
            user.role,
            groups=frozenset(map(str, data.get("groups") or ())),
            key_id=None if key_id is None else str(key_id),
            key_collections=None if keyed is None else frozenset(map(str, keyed)),
            read_only=bool(data.get("read_only")),
            via=str(data.get("via", "local")),
        )

    def from_proxy(self, headers: Mapping[str, str], address: str) -> Principal | None:
        """RAG_AUTH=header: the user a trusted proxy names; None without the header.

        Raises:
            AuthenticationError: the header came from an address that is not a trusted proxy.
        """
        if self.mode != "header":
            return None
        lowered = {k.lower(): v for k, v in headers.items()}
        name = lowered.get(self.config.user_header.lower(), "").strip()
        if not name:
            return None
        if not self.trusted(address):
            raise AuthenticationError(
                f"{self.config.user_header} is accepted only from a trusted proxy "
                "(RAG_TRUSTED_PROXIES)"
            )
        groups = lowered.get(self.config.groups_header.lower(), "")
        # Every request names its user: the proxy signed them in, so no sign-in is recorded.
        principal, _ = self._external("header", name, name, (g.strip() for g in groups.split(",")))
        return principal

    def trusted(self, address: str) -> bool:
        """Whether ``address`` is one of RAG_TRUSTED_PROXIES."""
        try:
            ip = ipaddress.ip_address(address.removeprefix("::ffff:"))
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

    # What the caller may read and change ---------------------------------------------

    def scope(self, caller: Principal, collections: Iterable[str] | None = None) -> Scope:
        """The collections ``caller`` may read, limited to ``collections`` when given.

        Raises:
            NotFoundError: a named collection does not exist or the caller may not read it.
        """
        readable = self._readable(caller)
        if collections is None:
            return Scope(readable, caller.user_id)
        wanted = set()
        for name in collections:
            found = self.accounts.find_collection(name)
            if found is None or (readable is not None and found.id not in readable):
                raise NotFoundError("collection", name)
            wanted.add(found.id)
        return Scope(readable, caller.user_id).narrowed(wanted)

    def _readable(self, caller: Principal) -> frozenset[str] | None:
        if caller.is_admin:
            readable = None
        else:
            readable = frozenset(
                c.id for c in self.accounts.collections() if c.right_of(caller) is not None
            )
        if caller.key_collections is not None:
            keyed = caller.key_collections
            readable = keyed if readable is None else readable & keyed
        return readable

    def collections(self, caller: Principal) -> list[Collection]:
        """The collections ``caller`` may read, by name."""
        readable = self._readable(caller)
        return [c for c in self.accounts.collections() if readable is None or c.id in readable]

    def collection(self, caller: Principal, name: str) -> Collection:
        """A collection the caller may read (raises ``NotFoundError`` otherwise)."""
        found = self.accounts.find_collection(name)
        readable = self._readable(caller)
        if found is None or (readable is not None and found.id not in readable):
            raise NotFoundError("collection", name)
        return found

    def writable(self, caller: Principal, name: str | None) -> Collection:
        """The collection a change goes to (None: the caller's default), checked.

        Raises:
            NotFoundError: no such collection, or one the caller may not read.
            PermissionDeniedError: the caller may read it but not change it.
        """
        if name is None:
            name = self.default_collection(caller)
        found = self.collection(caller, name)
        self.check_writes(caller, f"change collection {found.name}")
        if found.right_of(caller) is not Right.EDITOR:
            raise PermissionDeniedError(
                f"change collection {found.name}", "it is shared with you to read only"
            )
        return found

    def describe(self, caller: Principal, collection: Collection) -> dict[str, Any]:
        """A collection with its owner's and members' names and the caller's right."""
        names = {u.id: u.name for u in self.accounts.users()}
        right = collection.right_of(caller)
        return {
            "id": collection.id,
            "name": collection.name,
            "owner": names.get(collection.owner, collection.owner),
            "created_at": collection.created_at,
            "your_right": None if right is None else str(right),
            "members": [
                {"kind": m.kind, "member": names.get(m.member, m.member), "right": str(m.right)}
                for m in collection.members
            ],
        }

    def editable(self, caller: Principal) -> list[Collection]:
        """The collections the caller may change (none for viewers and read-only keys)."""
        if caller.read_only or caller.role is Role.VIEWER:
            return []
        return [c for c in self.collections(caller) if c.right_of(caller) is Right.EDITOR]

    def default_collection(self, caller: Principal) -> str:
        """Where uploads go when no collection is named.

        The only collection the caller may change, else the default collection.
        """
        editable = [
            c
            for c in self.collections(caller)
            if c.right_of(caller) is Right.EDITOR and c.id != DEFAULT_COLLECTION
        ]
        if not caller.is_admin and len(editable) == 1:
            return editable[0].id
        return DEFAULT_COLLECTION

    def check_writes(self, caller: Principal, action: str) -> None:
        """Refuse any change by a viewer or through a read-only key."""
        if caller.read_only:
            raise PermissionDeniedError(action, "this API key is read-only")
        if caller.role is Role.VIEWER:
            raise PermissionDeniedError(action, "viewers may ask, not change anything")

    def check_admin(self, caller: Principal, action: str) -> None:
        """Refuse an admin-only action to anyone else."""
        if not caller.is_admin:
            raise PermissionDeniedError(action, "only an admin may")
        self.check_writes(caller, action)

    # Collections ----------------------------------------------------------------------

    def create_collection(
        self, caller: Principal, name: str, owner: str | None = None
    ) -> Collection:
        """A new collection, owned by the caller (an admin may name another owner)."""
        self.check_writes(caller, "create a collection")
        owner_id = caller.user_id
        if owner is not None and owner != caller.name:
            self.check_admin(caller, "create a collection for another user")
            owner_id = self.accounts.user(owner).id
        created = self.accounts.create_collection(name, owner_id)
        self.record(caller, "collection created", created.id, {"name": name, "owner": owner_id})
        return created

    def share(
        self, caller: Principal, collection: str, kind: str, member: str, right: str
    ) -> Collection:
        """Share a collection with a user, a group or everyone signed in.

        Its owner may, and an admin.
        """
        found = self._owned(caller, collection, "share")
        target = member
        if kind == "user":
            target = self.accounts.user(member).id
        self.accounts.share(found.id, kind, target, right)
        self.record(
            caller, "collection shared", found.id, {"kind": kind, "member": target, "right": right}
        )
        return self.collection(caller, found.id)

    def unshare(self, caller: Principal, collection: str, kind: str, member: str) -> Collection:
        """Take a share back."""
        found = self._owned(caller, collection, "unshare")
        target = self.accounts.user(member).id if kind == "user" else member
        if self.accounts.unshare(found.id, kind, target):
            self.record(caller, "collection unshared", found.id, {"kind": kind, "member": target})
        return self.collection(caller, found.id)

    def forget_collection(self, caller: Principal, collection: str) -> Collection:
        """Check that the caller may delete a collection, and forget it.

        Its documents are deleted by ``RagService.delete_collection``.
        """
        found = self._owned(caller, collection, "delete")
        if found.id == DEFAULT_COLLECTION:
            raise PermissionDeniedError("delete the default collection", "it always exists")
        self.accounts.delete_collection(found.id)
        self.record(caller, "collection deleted", found.id, {"name": found.name})
        return found

    def _owned(self, caller: Principal, collection: str, what: str) -> Collection:
        found = self.collection(caller, collection)
        self.check_writes(caller, f"{what} collection {found.name}")
        if not caller.is_admin and found.owner != caller.user_id:
            raise PermissionDeniedError(
                f"{what} collection {found.name}", "only its owner or an admin may"
            )
        return found

    # Users (admins) -------------------------------------------------------------------

    def users(self, caller: Principal) -> list[User]:
        """Every account (admins only)."""
        self.check_admin(caller, "list users")
        return self.accounts.users()

    def add_user(self, caller: Principal, name: str, role: str, password: str) -> User:
        """A new local account (admins only)."""
        self.check_admin(caller, "add users")
        user = self.accounts.add_user(name, role, password)
        self.record(caller, "user added", user.id, {"name": name, "role": role})
        return user

    def set_role(self, caller: Principal, name: str, role: str) -> User:
        """Change a user's role (admins only)."""
        self.check_admin(caller, "change roles")
        user = self.accounts.set_role(name, role)
        self.record(caller, "role changed", user.id, {"role": role})
        return user

    def set_disabled(self, caller: Principal, name: str, disabled: bool = True) -> User:
        """Disable or enable a user (admins only); disabling ends the user's sessions."""
        self.check_admin(caller, "disable users")
        if disabled and self.accounts.user(name).id == caller.user_id:
            raise InvalidInputError("user", "you cannot disable yourself")
        user = self.accounts.set_disabled(name, disabled)
        self.record(caller, "user disabled" if disabled else "user enabled", user.id)
        return user

    def reset_password(self, caller: Principal, name: str, password: str) -> User:
        """Give a user a new password (admins, or the user itself); sessions end."""
        target = self.accounts.user(name)
        if target.id != caller.user_id:
            self.check_admin(caller, "reset other users' passwords")
        user = self.accounts.set_password(target.id, password)
        self.record(caller, "password reset", user.id)
        return user

    # API keys -------------------------------------------------------------------------

    def create_key(
        self,
        caller: Principal,
        user: str | None = None,
        *,
        name: str = "",
        collections: Iterable[str] | None = None,
        read_only: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new API key for the caller (an admin: for any user).

        Returns its record and the secret, which is shown once.
        """
        if caller.key_id is not None:
            raise PermissionDeniedError("create API keys", "not with an API key")
        owner = self.accounts.user(user) if user is not None else None
        if owner is None or owner.id == caller.user_id:
            owner = self.accounts.user(caller.user_id)
        else:
            self.check_admin(caller, "create keys for other users")
        restricted = None
        if collections is not None:
            as_owner = owner.principal()
            restricted = frozenset(self.collection(as_owner, c).id for c in collections)
        key, secret = self.accounts.create_key(
            owner.id, name, collections=restricted, read_only=read_only
        )
        self.record(
            caller,
            "key created",
            key.id,
            {"user": owner.id, "collections": sorted(restricted or []), "read_only": read_only},
        )
        return key, secret

    def keys(self, caller: Principal) -> list[ApiKey]:
        """The caller's keys (an admin: everyone's)."""
        return self.accounts.keys(None if caller.is_admin else caller.user_id)

    def revoke_key(self, caller: Principal, key_id: str) -> ApiKey:
        """Revoke a key of the caller's (an admin: anyone's)."""
        try:
            key = self.accounts.key(key_id)
        except NotFoundError:
            raise NotFoundError("API key", key_id) from None
        if key.user_id != caller.user_id and not caller.is_admin:
            raise NotFoundError("API key", key_id)
        revoked = self.accounts.revoke_key(key_id)
        self.record(caller, "key revoked", key_id, {"user": key.user_id})
        return revoked

    # Limits ---------------------------------------------------------------------------

    def count_request(self, caller: Principal) -> None:
        """Count a request; raises ``RateLimitedError`` (recorded) when over a limit."""
        try:
            self.limits.request(caller)
        except RateLimitedError as exc:
            self.record(
                caller, "rate limited", caller.key_id or caller.user_id, {"limit": exc.limit}
            )
            raise

    def check_tokens(self, caller: Principal) -> None:
        """Refuse a question when the caller's model tokens for the day are spent."""
        try:
            self.limits.tokens_left(caller)
        except RateLimitedError as exc:
            self.record(caller, "rate limited", caller.user_id, {"limit": exc.limit})
            raise

    def spend_tokens(self, caller: Principal, tokens: int) -> None:
        """Count the model tokens a question used."""
        self.limits.spend_tokens(caller, tokens)

    # Audit ----------------------------------------------------------------------------

    def record(
        self, caller: Principal, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> AuditRecord:
        """Append to the audit trail, as ``caller``."""
        detail = dict(detail or {})
        if caller.key_id is not None:
            detail.setdefault("key", caller.key_id)
        return self.audit_log.append(caller.user_id, action, target, detail)

    def record_as(
        self, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None
    ) -> AuditRecord:
        """Append a record for someone not (yet) signed in (a sign-in attempt)."""
        return self.audit_log.append(actor, action, target, detail)

    def record_question(
        self,
        caller: Principal,
        question: str,
        scope: Scope,
        cited: list[str],
        model: str,
        where: str = "",
    ) -> None:
        """A question in the audit trail: who, which collections, cited chunks, model.

        The text of the question only with RAG_AUDIT_QUESTIONS=true.
        """
        detail: dict[str, Any] = {
            "collections": None if scope.collections is None else sorted(scope.collections),
            "cited": cited,
            "model": model,
        }
        if self.config.audit_questions:
            detail["question"] = question
        self.record(caller, "question", where, detail)

    def verify_audit(self, caller: Principal) -> Verdict:
        """Check the audit trail's chain (admins only)."""
        self.check_admin(caller, "verify the audit trail")
        return self.audit_log.verify()

    def audit_records(self, caller: Principal, since: str | None = None) -> list[AuditRecord]:
        """The audit trail since a time (admins only)."""
        if not caller.is_admin:
            raise PermissionDeniedError("read the audit trail", "only an admin may")
        return list(self.audit_log.records(since))


def _refuse(reason: str) -> Principal:
    raise AuthenticationError(reason)


def _system_owner(accounts: Accounts) -> str:
    """The owner of the default collection when people sign in.

    The first admin, or a placeholder account that cannot sign in (provider none).
    """
    admins = [u for u in accounts.users() if u.role is Role.ADMIN and u.provider != "none"]
    if admins:
        return admins[0].id
    return accounts.ensure_local().id
