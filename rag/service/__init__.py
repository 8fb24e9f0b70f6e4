"""The use cases every adapter (web pages, HTTP API, CLI, job workers) calls.

``components`` builds the real collaborators from settings (the composition root).
"""
