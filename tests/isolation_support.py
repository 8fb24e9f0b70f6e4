"""Helpers of the isolation attack suite: a served app, sign-ins, jobs, leak checks.

Run as ``python -m tests.isolation_support`` it is a driver for many ``ragchat`` commands
in one process (JSON in on stdin, JSON out): each goes through ``rag.cli.main`` as typed,
and the imports are paid once rather than per command.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from rag.access.sessions import COOKIE_NAME
from rag.llm.local import free_port

ROOT = Path(__file__).resolve().parents[1]
TERMINAL = {"done", "failed", "cancelled"}


@contextlib.contextmanager
def served(app: ASGIApp) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def sign_in(base_url: str, name: str, password: str) -> httpx.Response:
    """POST the sign-in form as a browser would (the redirect is not followed)."""
    return httpx.post(
        f"{base_url}/auth/signin",
        data={"username": name, "password": password},
        follow_redirects=False,
        timeout=30,
    )


def session_cookie(base_url: str, name: str, password: str) -> str:
    """The session cookie a right password gets."""
    done = sign_in(base_url, name, password)
    assert done.status_code == 303 and done.headers["location"] == "/", done.text
    # Read from the header: a short-lived cookie (Max-Age=1) may be dropped by a jar.
    name_value = done.headers["set-cookie"].split(";", 1)[0]
    cookie_name, _, value = name_value.partition("=")
    assert cookie_name == COOKIE_NAME and value, done.headers
    return value


def client(api_url: str, *, key: str | None = None, cookie: str | None = None) -> httpx.Client:
    """A client of the API with an API key, a session cookie, or no credentials."""
    headers: dict[str, str] = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE_NAME}={cookie}"
    return httpx.Client(base_url=api_url, headers=headers, timeout=60)


def flipped(value: str, at: int) -> str:
    """``value`` with the character at ``at`` replaced by another of the same alphabet."""
    old = value[at]
    new = "A" if old != "A" else "B"
    return value[:at] + new + value[at + 1 :]


def wait_for_job(api: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Poll a job until it is done, failed or cancelled; its JSON."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/v1/jobs/{job_id}")
        assert job.status_code == 200, job.text
        body: dict[str, Any] = job.json()
        if body["state"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"job {job_id} still {body['state']}"
        time.sleep(0.1)


def leaked(text: str, secrets: Iterable[str]) -> list[str]:
    """The secrets that occur in ``text`` (case-insensitive)."""
    lowered = text.lower()
    return [s for s in secrets if s.lower() in lowered]


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``ragchat`` process over ``data_dir`` (no RAG_* of the caller)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return {
        **base,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAG_DATA_DIR": str(data_dir),
        **extra,
    }


def ragchat(
    env: dict[str, str], *args: str, stdin: str = "", timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rag.cli ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout_s,
    )


def ragchat_many(
    env: dict[str, str], commands: dict[str, tuple[list[str], str]], timeout_s: float = 300
) -> tuple[dict[str, dict[str, Any]], str]:
    """Run ``{name: (argv, stdin)}`` one after the other in one ``ragchat`` process.

    Returns each command's ``{"code", "out", "err"}`` and the process's own stderr (logs).
    """
    done = subprocess.run(
        [sys.executable, "-m", "tests.isolation_support"],
        env=env,
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, Any]] = json.loads(done.stdout)
    return results, done.stderr


def _drive() -> None:
    """The driver's side of ``ragchat_many``."""
    from rag.cli import main

    commands: dict[str, tuple[list[str], str]] = json.load(sys.stdin)
    logging.basicConfig(stream=sys.__stderr__)  # main's own basicConfig is then a no-op
    results = {}
    for name, (argv, stdin) in commands.items():
        out, err = io.StringIO(), io.StringIO()
        sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
        results[name] = {"code": code, "out": out.getvalue(), "err": err.getvalue()}
    sys.__stdout__.write(json.dumps(results))


if __name__ == "__main__":
    _drive()
