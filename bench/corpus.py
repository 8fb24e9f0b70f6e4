"""Fetch real document corpora from Debian packages (without installing them)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

CORPORA = Path(__file__).resolve().parent / "corpora"
PACKAGES = {
    "postgresql": ("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html"),
    "reportlab": ("python-reportlab-doc", "usr/share/doc/python-reportlab-doc"),
    "texlive": ("texlive-publishers-doc", "usr/share/doc/texlive-doc"),
}


def corpus(name: str) -> Path:
    """The folder of a corpus, downloading and unpacking its Debian package on first use."""
    package, subdir = PACKAGES[name]
    target = CORPORA / name
    if not (target / subdir).is_dir():
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", package], cwd=tmp, check=True)
            (deb,) = Path(tmp).glob("*.deb")
            subprocess.run(["dpkg", "-x", str(deb), str(target)], check=True)
    return target / subdir
