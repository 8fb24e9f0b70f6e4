"""``python -m rag.cli``: the ``ragchat`` command."""

import sys

from rag.cli import main

sys.exit(main())
