from __future__ import annotations

import pytest

from rag.errors import ProviderError
from rag.llm.local import LocalLLMServer, bundled_model_path, server_environment


def test_server_environment_drops_variables_the_server_reads_as_settings():
    env = server_environment(
        {"PORT": "8501", "host": "0.0.0.0", "N_CTX": "1", "PATH": "/bin", "RAG_DATA_DIR": "d"}
    )
    assert env == {"PATH": "/bin", "RAG_DATA_DIR": "d"}


def test_command_pins_loopback_port_and_model():
    server = LocalLLMServer(bundled_model_path(), port=9999, n_ctx=2048, threads=2)
    cmd = server.command()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "9999"
    assert cmd[cmd.index("--model") + 1].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert server.base_url == "http://127.0.0.1:9999/v1"


def test_the_server_queues_requests_instead_of_cancelling_the_running_answer():
    # llama-cpp-python's default ends the running answer when another request arrives.
    cmd = LocalLLMServer(bundled_model_path(), port=9999).command()
    assert cmd[cmd.index("--interrupt_requests") + 1] == "False"


def test_a_server_that_was_never_started_is_not_started_behind_the_users_back():
    server = LocalLLMServer(bundled_model_path(), port=9999)
    with pytest.raises(ProviderError, match="the bundled model failed"):
        server.ensure_running()
    assert not server.running()
