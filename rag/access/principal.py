"""The caller of a use case, and the collections it may read.

Every read of stored data takes a ``Scope``: the store filters inside its searches with
it, and everything else (documents, conversations, jobs) is filtered by it or by owner.
An adapter never builds a ``Scope`` itself; it authenticates the caller into a
``Principal`` and the service derives the scope from the principal and the collections'
memberships.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_COLLECTION = "default"
LOCAL_USER = "local"


class Role(StrEnum):
    """What a user may do in general.

    admin: users, all collections, audit; member: own collections and those shared with
    them; viewer: ask and read what is shared with them, change nothing.
    """

    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Right(StrEnum):
    """What a member of a collection may do with it."""

    VIEWER = "viewer"  # read and ask
    EDITOR = "editor"  # also add, re-index and delete documents


@dataclass(frozen=True)
class Principal:
    """A signed-in caller.

    ``key_id`` is set when the caller came with an API key; ``key_collections`` then
    restricts it further (None: all the user's collections) and ``read_only`` forbids
    every change.
    """

    user_id: str
    name: str
    role: Role
    groups: frozenset[str] = frozenset()
    key_id: str | None = None
    key_collections: frozenset[str] | None = None
    read_only: bool = False
    via: str = "local"  # local, password, oidc, header, key

    @property
    def is_admin(self) -> bool:
        """An admin sees and manages everything (a restricted key still restricts it)."""
        return self.role is Role.ADMIN

    @property
    def label(self) -> str:
        """How logs and the audit trail name the caller (``name`` or ``name (key k_...)``)."""
        return f"{self.name} (key {self.key_id})" if self.key_id else self.name


# RAG_AUTH=none: the one user of a ragchat on its own machine.
LOCAL = Principal(user_id=LOCAL_USER, name=LOCAL_USER, role=Role.ADMIN, via="local")


@dataclass(frozen=True)
class Scope:
    """The collections a caller may read: ``collections`` None means all of them.

    ``owner`` is the user whose conversations, feedback and jobs the caller sees (None:
    everyone's, for an admin's audit views only; the pages and the API pass the caller's).
    """

    collections: frozenset[str] | None
    owner: str | None = None

    @classmethod
    def everything(cls, owner: str | None = None) -> Scope:
        """Every collection (an admin, the local user, a worker acting for a job's owner)."""
        return cls(None, owner)

    @classmethod
    def only(cls, collections: set[str] | frozenset[str], owner: str | None = None) -> Scope:
        """Exactly these collections."""
        return cls(frozenset(collections), owner)

    def allows(self, collection: str) -> bool:
        """Whether documents of ``collection`` may be read."""
        return self.collections is None or collection in self.collections

    def narrowed(self, collections: set[str] | frozenset[str] | None) -> Scope:
        """This scope limited to ``collections`` (None: unchanged); never wider."""
        if collections is None:
            return self
        wanted = frozenset(collections)
        allowed = wanted if self.collections is None else wanted & self.collections
        return Scope(allowed, self.owner)


def principal_json(caller: Principal) -> dict[str, object]:
    """A caller as JSON, for a job done later on its behalf (``revive`` reads it back)."""
    return {
        "user_id": caller.user_id,
        "name": caller.name,
        "groups": sorted(caller.groups),
        "key_id": caller.key_id,
        "key_collections": None
        if caller.key_collections is None
        else sorted(caller.key_collections),
        "read_only": caller.read_only,
        "via": caller.via,
    }
