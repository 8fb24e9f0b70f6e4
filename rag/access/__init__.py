"""Who may do what: accounts, collections, API keys, sessions, limits, the audit trail.

``principal`` is the signed-in caller and the ``Scope`` of collections it may read;
``accounts`` keeps users, collections, memberships and API keys (SQLite, passwords hashed
with argon2id); ``sessions`` signs the browser's session cookie; ``limits`` counts requests
and model tokens (the ``limits`` library); ``audit`` is the hash-chained, append-only log.
The use cases over them are in ``rag.service.access``.
"""
