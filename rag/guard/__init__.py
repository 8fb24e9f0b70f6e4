"""Guardrails: personal data, injected instructions, unsafe output, content moderation.

Personal data is kept from remote models, instructions hidden in documents are kept from
the prompt's authority, and model output is kept from fetching or linking anywhere it
should not.
"""
