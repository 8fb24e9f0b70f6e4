"""Observing the service: metrics (and traces)."""
