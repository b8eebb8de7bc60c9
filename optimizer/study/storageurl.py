"""Storage URLs as files and as text: the SQLite file a URL opens, whether an existing
file is a database, and how a URL may be shown to a client (password hidden, clipped).
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trainer.errors import ConfigError

SQLITE_PREFIX = "sqlite:///"
_SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL opens, as SQLAlchemy decodes it; None for other
    URLs and in-memory databases."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    try:
        database = make_url(url).database
    except (ArgumentError, ValueError):
        return None
    if not database or database == ":memory:":
        return None
    return Path(database)


def sqlite_file_kind(path: Path) -> str:
    """``absent``, ``database`` (starts with the SQLite header), ``empty`` or ``other``."""
    try:
        if not path.exists():
            return "absent"
        if not path.is_file():
            return "other"
        with path.open("rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError:
        return "other"
    if not head:
        return "empty"
    return "database" if head == _SQLITE_HEADER else "other"


def refuse_non_database(path: Path, *, field: str = "storage") -> None:
    """ConfigError unless ``path`` is absent or a SQLite database: an existing file of
    anything else is never turned into one.

    An empty file may be a database another runner is creating this instant (SQLite
    writes the header with the first table), so it is given a few seconds first.
    """
    accepted = "a new file or an existing SQLite database"
    for attempt in range(5):
        kind = sqlite_file_kind(path)
        if kind in ("absent", "database"):
            return
        if kind == "other":
            raise ConfigError(field, f"{path} exists and is not a SQLite database",
                              accepted=accepted)
        time.sleep(0.1 * (attempt + 1))
    raise ConfigError(field, f"{path} is an empty file, not a SQLite database", accepted=accepted)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and replies)."""
    if url.startswith(SQLITE_PREFIX) or not url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, so error messages never echo megabytes."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
