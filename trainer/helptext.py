"""Help text on dataclass fields: one convention for every config dataclass.

``field(default=..., metadata=meta("what it means"))``; CLIs, docs and error
messages read it back from ``dataclasses.fields(cls)[i].metadata["help"]``.
"""

from __future__ import annotations


def meta(help_text: str) -> dict[str, str]:
    """Field metadata carrying ``help_text``."""
    return {"help": help_text}
