"""Who a command acts as."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.access.principal import Principal
    from rag.service.core import RagService


def cli_caller(service: RagService, args: argparse.Namespace) -> Principal:
    """``--user NAME`` (reads only what NAME may), else the operator (an admin)."""
    name = getattr(args, "user", None)
    return service.access.as_user(name) if name else service.access.operator()
