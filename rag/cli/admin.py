"""``ragchat users``, ``keys``, ``collections`` and ``audit``: accounts and sharing.

The command line runs on the server with the data folder in reach, so it acts as the
operator, an admin, unless ``--user NAME`` says otherwise; every change is checked and
recorded by the access service, as from the pages or the API.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rag.cli.caller import cli_caller
from rag.errors import InvalidInputError
from rag.settings import Settings
from rag.text import safe_label

if TYPE_CHECKING:
    from rag.access.principal import Principal
    from rag.service.core import RagService

SettingsOf = Callable[[argparse.Namespace], Settings]
ROLES = ["admin", "member", "viewer"]


def add_commands(sub: Any, settings_of: SettingsOf) -> None:
    """Register ``users``, ``keys``, ``collections`` and ``audit``."""
    _users(sub, settings_of)
    _keys(sub, settings_of)
    _collections(sub, settings_of)
    _audit(sub, settings_of)


def _command(p: argparse.ArgumentParser, settings_of: SettingsOf, run: Callable[..., int]) -> None:
    p.set_defaults(func=lambda a: _run(a, settings_of(a), run))


def _run(args: argparse.Namespace, settings: Settings, run: Callable[..., int]) -> int:
    with _service(settings) as service:
        return run(args, service, cli_caller(service, args))


@contextmanager
def _service(settings: Settings) -> Iterator[RagService]:
    from rag.service.components import open_service

    with open_service(settings, one_shot=True) as service:
        yield service


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


# Users ----------------------------------------------------------------------------------


def _users(sub: Any, settings_of: SettingsOf) -> None:
    users = sub.add_parser("users", help="local accounts (RAG_AUTH=password) and roles")
    u = users.add_subparsers(dest="users_command", required=True)
    p = u.add_parser(
        "add",
        help="add an account; the password is read from the terminal, or from stdin's "
        "first line when piped",
    )
    p.add_argument("name")
    p.add_argument("--role", choices=ROLES, default="member", help="default: member")
    _command(p, settings_of, _cmd_user_add)
    p = u.add_parser("list", help="every account with its role and state")
    _json_flag(p)
    _command(p, settings_of, _cmd_user_list)
    for verb, disabled in (("disable", True), ("enable", False)):
        p = u.add_parser(verb, help=f"{verb} an account" + (" (ends its sessions)" * disabled))
        p.add_argument("name")
        p.set_defaults(disabled=disabled)
        _command(p, settings_of, _cmd_user_disable)
    p = u.add_parser("set-role", help="change an account's role")
    p.add_argument("name")
    p.add_argument("role", choices=ROLES)
    _command(p, settings_of, _cmd_user_role)
    p = u.add_parser("reset-password", help="set a new password (ends the account's sessions)")
    p.add_argument("name")
    _command(p, settings_of, _cmd_user_password)


def read_password(prompt: str = "Password") -> str:
    """A new password: asked twice on a terminal, else stdin's first line."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} again: ") != first:
            raise InvalidInputError("password", "the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _cmd_user_add(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    user = service.access.add_user(caller, args.name, args.role, read_password())
    print(f"added {safe_label(user.name)} ({user.role})")
    return 0


def _cmd_user_list(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    users = service.access.users(caller)
    if args.json:
        print(json.dumps([u.to_json() for u in users], indent=2))
        return 0
    for u in users:
        state = "disabled" if u.disabled else "active"
        print(f"{safe_label(u.name):24} {u.role!s:7} {state:8} {u.provider:8} {u.created_at}")
    return 0


def _cmd_user_disable(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    user = service.access.set_disabled(caller, args.name, args.disabled)
    print(f"{safe_label(user.name)} is {'disabled' if user.disabled else 'enabled'}")
    return 0


def _cmd_user_role(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    user = service.access.set_role(caller, args.name, args.role)
    print(f"{safe_label(user.name)} is now {user.role}")
    return 0


def _cmd_user_password(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    user = service.access.reset_password(caller, args.name, read_password("New password"))
    print(f"new password set for {safe_label(user.name)}; its sessions have ended")
    return 0


# API keys -------------------------------------------------------------------------------


def _keys(sub: Any, settings_of: SettingsOf) -> None:
    keys = sub.add_parser("keys", help="API keys for programs (Authorization: Bearer)")
    k = keys.add_subparsers(dest="keys_command", required=True)
    p = k.add_parser("create", help="a new key; its secret is printed once")
    p.add_argument(
        "--user", "--for", dest="owner", metavar="NAME", help="whose key (default: yours)"
    )
    p.add_argument("--name", default="", help="what the key is for")
    p.add_argument(
        "--collection",
        action="append",
        metavar="NAME",
        help="limit the key to this collection (repeat for more)",
    )
    p.add_argument("--read-only", action="store_true", help="the key may ask, not change")
    _json_flag(p)
    _command(p, settings_of, _cmd_key_create)
    p = k.add_parser("list", help="keys (yours; an admin sees everyone's)")
    _json_flag(p)
    _command(p, settings_of, _cmd_key_list)
    p = k.add_parser("revoke", help="revoke a key at once")
    p.add_argument("key_id")
    _command(p, settings_of, _cmd_key_revoke)


def _cmd_key_create(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    key, secret = service.access.create_key(
        caller, args.owner, name=args.name, collections=args.collection, read_only=args.read_only
    )
    if args.json:
        print(json.dumps({"key": secret, **key.to_json()}))
    else:
        print(secret)
        print(f"key {key.id}: shown once, keep it secret", file=sys.stderr)
    return 0


def _cmd_key_list(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    names = {u.id: u.name for u in service.access.accounts.users()}
    keys = service.access.keys(caller)
    if args.json:
        print(json.dumps([k.to_json(names.get(k.user_id)) for k in keys], indent=2))
        return 0
    for k in keys:
        state = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        scope = ",".join(sorted(k.collections)) if k.collections is not None else "all"
        used = k.last_used_at or "never used"
        print(
            f"{k.id}  {safe_label(names.get(k.user_id, k.user_id)):16} {state:8}  "
            f"collections: {scope}{'  read-only' if k.read_only else ''}  {used}  "
            f"{safe_label(k.name)}"
        )
    return 0


def _cmd_key_revoke(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    key = service.access.revoke_key(caller, args.key_id)
    print(f"key {key.id} revoked")
    return 0


# Collections ----------------------------------------------------------------------------


def _collections(sub: Any, settings_of: SettingsOf) -> None:
    cols = sub.add_parser("collections", help="collections of documents and who may read them")
    c = cols.add_subparsers(dest="collections_command", required=True)
    p = c.add_parser("create", help="a new collection")
    p.add_argument("name")
    p.add_argument("--owner", metavar="USER", help="its owner (an admin may name another)")
    _command(p, settings_of, _cmd_col_create)
    p = c.add_parser("list", help="the collections you may read, with their members")
    _json_flag(p)
    _command(p, settings_of, _cmd_col_list)
    for verb in ("share", "unshare"):
        p = c.add_parser(verb, help=f"{verb} a collection with a user, a group or everyone")
        p.add_argument("collection")
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", dest="member_user", metavar="NAME")
        who.add_argument("--group", metavar="NAME")
        who.add_argument("--everyone", action="store_true", help="everyone who signs in")
        if verb == "share":
            p.add_argument("--right", choices=["viewer", "editor"], default="viewer")
        _command(p, settings_of, _cmd_col_share if verb == "share" else _cmd_col_unshare)
    p = c.add_parser("delete", help="delete a collection and its documents")
    p.add_argument("collection")
    p.add_argument("--yes", action="store_true", help="do not ask")
    _command(p, settings_of, _cmd_col_delete)


def _member(args: argparse.Namespace) -> tuple[str, str]:
    if args.everyone:
        return "everyone", "*"
    if args.group:
        return "group", args.group
    return "user", args.member_user


def _cmd_col_create(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    created = service.access.create_collection(caller, args.name, args.owner)
    print(f"created collection {safe_label(created.name)}")
    return 0


def _cmd_col_list(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    found = [service.access.describe(caller, c) for c in service.access.collections(caller)]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for c in found:
        members = ", ".join(f"{m['kind']} {m['member']} ({m['right']})" for m in c["members"])
        print(f"{safe_label(c['name']):24} owner {safe_label(c['owner']):16} {members}")
    return 0


def _cmd_col_share(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    kind, member = _member(args)
    service.access.share(caller, args.collection, kind, member, args.right)
    print(f"{safe_label(args.collection)} shared with {kind} {safe_label(member)} ({args.right})")
    return 0


def _cmd_col_unshare(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    kind, member = _member(args)
    service.access.unshare(caller, args.collection, kind, member)
    print(f"{safe_label(args.collection)} no longer shared with {kind} {safe_label(member)}")
    return 0


def _cmd_col_delete(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidInputError("--yes", "deleting a collection needs --yes when not asked")
        answer = input(f"Delete collection {args.collection} and all its documents? [y/N] ")
        if answer.strip().lower() not in {"y", "yes"}:
            print("nothing deleted")
            return 1
    service.delete_collection(args.collection, caller=caller)
    print(f"deleted collection {safe_label(args.collection)} and its documents")
    return 0


# Audit ----------------------------------------------------------------------------------


def _audit(sub: Any, settings_of: SettingsOf) -> None:
    audit = sub.add_parser("audit", help="the tamper-evident audit trail")
    a = audit.add_subparsers(dest="audit_command", required=True)
    p = a.add_parser("verify", help="check the hash chain; exit code 1 when it is broken")
    _command(p, settings_of, _cmd_audit_verify)
    p = a.add_parser("export", help="print the records as JSON Lines")
    p.add_argument("--since", metavar="TIME", help="ISO 8601 time, e.g. 2026-11-01")
    _command(p, settings_of, _cmd_audit_export)


def _cmd_audit_verify(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    verdict = service.access.verify_audit(caller)
    if verdict.ok:
        print(f"audit trail intact: {verdict.records} records")
        return 0
    print(f"audit trail BROKEN at record {verdict.seq}: {verdict.problem}")
    return 1


def _cmd_audit_export(args: argparse.Namespace, service: RagService, caller: Principal) -> int:
    for record in service.access.audit_records(caller, args.since):
        print(json.dumps(record.to_json(), ensure_ascii=False))
    return 0
