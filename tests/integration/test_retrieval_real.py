"""The right passage of a long page-less document reaches the model (real embedding model).

A page-less file (HTML, Markdown) used to count as one "page" for page diversity, so only
its best chunk led and every other file's best chunk came before its second: the chunk
saying that max_connections defaults to 100 never reached the model, and the answer said 10.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.cli import main
from rag.service.components import build_retriever, build_store
from rag.settings import Settings

SECTIONS = [
    (
        "Connection limits",
        "max_connections and superuser_reserved_connections together decide how many "
        "clients can connect at once. The default of each is given in its own section "
        "below; change a default in postgresql.conf and restart the server.",
    ),
    (
        "listen_addresses",
        "listen_addresses (string) specifies the TCP/IP addresses on which the server "
        "listens for connections from client applications. The default is localhost.",
    ),
    (
        "max_connections",
        "max_connections (integer) determines the maximum number of concurrent connections "
        "to the database server. The default is typically 100 connections.",
    ),
    (
        "port",
        "port (integer) is the TCP port the server listens on; 5432 by default.",
    ),
    (
        "superuser_reserved_connections",
        "superuser_reserved_connections (integer) sets the number of connection slots "
        "reserved for superusers. The default is three connections.",
    ),
]

OTHER_PAGES = {
    "pgbouncer.html": "Connection pooling: the default pool size is 20 server connections "
    "per user and database; max_client_conn limits client connections.",
    "libpq.html": "The connect_timeout connection parameter is the maximum time to wait "
    "while connecting; zero, the default, means wait indefinitely.",
    "keepalives.html": "tcp_keepalives_idle sets the seconds of inactivity after which TCP "
    "sends a keepalive on a client connection; the default uses the system's value.",
    "hba.html": "The pg_hba.conf file controls which hosts may connect; by default only "
    "local connections are allowed, with the default authentication method.",
    "pool-sizing.html": "How many connections a server should accept by default depends on "
    "its cores and memory; more concurrent connections need more memory.",
    "replication.html": "max_wal_senders sets the maximum number of concurrent connections "
    "from standby servers; the default is 10.",
}


def html(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{h}</h2>\n<p>{p}</p>\n" for h, p in sections)
    return f"<html><head><title>{title}</title></head><body>\n{body}</body></html>"


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("manual")
    (folder / "runtime-config-connection.html").write_text(
        html("Connection Settings", SECTIONS), encoding="utf-8"
    )
    for name, text in OTHER_PAGES.items():
        (folder / name).write_text(html(name.removesuffix(".html"), [("About", text)]))
    index = folder / "index"
    assert main(["ingest", str(folder), "--index", str(index)]) == 0
    return index


def test_the_answer_in_the_third_chunk_of_an_html_page_is_retrieved(index: Path):
    settings = Settings(index_dir=index)
    store = build_store(settings)
    page = [c for c in store.all_chunks() if c.source.endswith("runtime-config-connection.html")]
    page.sort(key=lambda c: c.offset)
    assert page[2].heading == "max_connections" and "typically 100" in page[2].text

    # The page's first chunk matches the question best; before, it was the page's only
    # chunk until every other page had one, so the third never made the top k.
    found = build_retriever(settings, store).invoke(
        "how many connections does the server accept by default?", within=None
    )

    assert len(found) == settings.retrieval_k
    assert page[2].chunk_id in [d.metadata["chunk_id"] for d in found]
