"""Access: collections and sharing (on the documents page), API keys, users and the audit trail.

Every action goes to the access service as the signed-in caller, which checks it and
records it in the audit trail; the page only shows what the service returns.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from rag.errors import RagError
from rag.text import safe_label
from ui.render import escape_markdown, show_error
from ui.resources import Resources

logger = logging.getLogger(__name__)
ROLES = ["member", "viewer", "admin"]


def page(res: Resources) -> None:
    """Render the access page: API keys; for admins also users, roles and the audit trail."""
    st.title("Access")
    _keys(res)
    if res.caller.is_admin:
        _users(res)
        _audit(res)


def _act(what: str, action: Any) -> bool:
    """Run one change; say what happened or why it was refused."""
    try:
        action()
    except RagError as exc:
        show_error(exc, None, icon=":material/block:")
        return False
    st.toast(what, icon=":material/check:")
    return True


# Collections -----------------------------------------------------------------------------


def collections_section(res: Resources) -> None:
    """The caller's collections with their shares; create, share, unshare and delete."""
    access, caller = res.service.access, res.caller
    st.subheader("Collections")
    found = access.collections(caller)
    described = [access.describe(caller, c) for c in found]
    st.dataframe(
        [
            {
                "collection": safe_label(d["name"]),
                "owner": safe_label(d["owner"]),
                "your right": d["your_right"] or "",
                "shared with": ", ".join(
                    f"{m['kind']} {safe_label(m['member'])} ({m['right']})" for m in d["members"]
                ),
            }
            for d in described
        ],
        hide_index=True,
        use_container_width=True,
    )
    if access.editable(caller):
        with st.form("new-collection", clear_on_submit=True):
            name = st.text_input("New collection")
            if st.form_submit_button("Create collection", icon=":material/add:") and name.strip():
                _act(
                    f"Created {safe_label(name.strip())}",
                    lambda: access.create_collection(caller, name.strip()),
                )
    owned = [c for c in found if caller.is_admin or c.owner == caller.user_id]
    if not owned or caller.read_only:
        return
    names = {c.id: c.name for c in owned}
    with st.expander("Share or delete a collection"):
        chosen = st.selectbox(
            "Collection", list(names), format_func=lambda cid: safe_label(names[cid])
        )
        with st.form("share"):
            kind = st.radio("With", ["user", "group", "everyone"], horizontal=True)
            member = st.text_input("User or group name (not needed for everyone)")
            right = st.radio("Right", ["viewer", "editor"], horizontal=True)
            if st.form_submit_button("Share", icon=":material/share:"):
                who = "*" if kind == "everyone" else member.strip()
                _act(
                    f"Shared with {kind} {safe_label(who)}",
                    lambda: access.share(caller, chosen, kind, who, right),
                )
        current = next(d for d in described if d["id"] == chosen)["members"]
        if current:
            labels = [f"{m['kind']} {m['member']}" for m in current]
            gone = st.selectbox("Take back a share", labels)
            if st.button("Unshare", icon=":material/remove_moderator:"):
                m = current[labels.index(gone)]
                _act(
                    f"No longer shared with {safe_label(gone)}",
                    lambda: access.unshare(caller, chosen, m["kind"], m["member"]),
                )
                st.rerun()
        sure = st.checkbox("Delete this collection and all its documents")
        delete = st.button("Delete collection", icon=":material/delete_forever:", disabled=not sure)
        if delete and _act(
            f"Deleted {safe_label(names[chosen])}",
            lambda: res.service.delete_collection(chosen, caller=caller),
        ):
            st.rerun()


# API keys --------------------------------------------------------------------------------


def _keys(res: Resources) -> None:
    access, caller = res.service.access, res.caller
    st.subheader("API keys")
    st.caption(
        "Programs send a key as `Authorization: Bearer rck_…`; it acts as its user, limited "
        "to the collections and rights chosen here."
    )
    readable = {c.id: c.name for c in access.collections(caller)}
    with st.form("new-key", clear_on_submit=True):
        name = st.text_input("What the key is for")
        limited = st.multiselect(
            "Only these collections (none chosen: all of yours)",
            list(readable),
            format_func=lambda cid: safe_label(readable[cid]),
        )
        read_only = st.checkbox("Read-only (may ask and search, not change)")
        if st.form_submit_button("Create key", icon=":material/key:"):
            try:
                key, secret = access.create_key(
                    caller, name=name.strip(), collections=limited or None, read_only=read_only
                )
            except RagError as exc:
                show_error(exc, res.service.record_error)
            else:
                st.success(f"Key {key.id} created. Copy it now: it is not shown again.")
                st.code(secret, language=None)
    keys = access.keys(caller)
    if not keys:
        return
    st.dataframe(
        [
            {
                "id": k.id,
                "for": safe_label(k.name),
                "collections": "all"
                if k.collections is None
                else ", ".join(safe_label(readable.get(c, c)) for c in sorted(k.collections)),
                "read-only": "yes" if k.read_only else "",
                "last used": k.last_used_at or "never",
                "state": f"revoked {k.revoked_at}" if k.revoked_at else "active",
            }
            for k in keys
        ],
        hide_index=True,
        use_container_width=True,
    )
    active = [k.id for k in keys if k.active]
    if active:
        gone = st.selectbox("Revoke a key", active)
        revoke = st.button("Revoke", icon=":material/key_off:")
        if revoke and _act(f"Revoked {gone}", lambda: access.revoke_key(caller, gone)):
            st.rerun()


# Users and audit (admins) ----------------------------------------------------------------


def _users(res: Resources) -> None:
    access, caller = res.service.access, res.caller
    st.subheader("Users")
    users = access.users(caller)
    st.dataframe(
        [
            {
                "user": safe_label(u.name),
                "role": str(u.role),
                "signs in with": u.provider,
                "state": "disabled" if u.disabled else "active",
                "since": u.created_at,
            }
            for u in users
        ],
        hide_index=True,
        use_container_width=True,
    )
    if access.mode == "password":
        with st.form("new-user", clear_on_submit=True):
            name = st.text_input("New user")
            role = st.selectbox("Role", ROLES)
            password = st.text_input("Password", type="password")
            if st.form_submit_button("Add user", icon=":material/person_add:"):
                _act(
                    f"Added {safe_label(name.strip())}",
                    lambda: access.add_user(caller, name.strip(), role, password),
                )
    names = [u.name for u in users if u.provider != "none"]
    if not names:
        return
    with st.expander("Change a user"):
        who = st.selectbox("User", names, format_func=safe_label)
        target = next(u for u in users if u.name == who)
        role = st.selectbox("Role", ROLES, index=ROLES.index(str(target.role)), key="role-of")
        left, middle, right = st.columns(3)
        if left.button("Set role"):
            _act(f"{safe_label(who)} is now {role}", lambda: access.set_role(caller, who, role))
        toggle = "Enable" if target.disabled else "Disable"
        if middle.button(toggle) and _act(
            f"{toggle}d {safe_label(who)}",
            lambda: access.set_disabled(caller, who, not target.disabled),
        ):
            st.rerun()
        if access.mode == "password":
            new = st.text_input("New password", type="password", key="new-password")
            if right.button("Reset password", disabled=not new):
                _act(
                    f"New password for {safe_label(who)}",
                    lambda: access.reset_password(caller, who, new),
                )


def _audit(res: Resources) -> None:
    access, caller = res.service.access, res.caller
    st.subheader("Audit trail")
    if st.button("Verify the chain", icon=":material/verified:"):
        verdict = access.verify_audit(caller)
        if verdict.ok:
            st.success(f"Intact: {verdict.records} records.")
        else:
            st.error(
                f"Broken at record {verdict.seq}: {escape_markdown(str(verdict.problem))}",
                icon=":material/gpp_bad:",
            )
    records = access.audit_records(caller)[-200:]
    st.dataframe(
        [
            {
                "#": r.seq,
                "at": r.at,
                "who": safe_label(r.actor),
                "did": r.action,
                "to": safe_label(r.target),
                "detail": safe_label(str(r.detail)),
            }
            for r in reversed(records)
        ],
        hide_index=True,
        use_container_width=True,
    )
