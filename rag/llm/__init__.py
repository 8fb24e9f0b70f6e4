"""Language model endpoints.

``client``: the resilient OpenAI-compatible client; ``local``: the bundled llama.cpp server.
"""
