"""Bounds on everything a study may ask for, and the bounded TOML decoder.

A study file can come from a client of the optimizer service, so each size and time
in it costs the server memory or time: every one has an upper bound, and an error
names the field and the accepted range.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from trainer.errors import ConfigError

MAX_TEXT_BYTES = 256 * 1024   # a study file's size
MAX_DEPTH = 16                # nesting of tables, arrays and dotted keys
MAX_NAME_LEN = 128
MAX_STRING_LEN = 1024         # storage URL, endpoint, function
MAX_TRIALS = 1000             # per distribution (the GP refits on every trial)
MAX_STARTUP_TRIALS = 100      # enqueued at once when a study is created
MAX_SEED = 2**31 - 1
MAX_DISTRIBUTIONS = 16
MAX_PARAMS = 16
MAX_LIST_ITEMS = 64           # endpoints, choices, initial points
MAX_WORKERS = 64
MAX_RETRIES = 20
MAX_TIMEOUT_S = 7 * 86400.0
HEARTBEAT_RANGE = (0.1, 600.0)
LEASE_RANGE = (2.0, 86400.0)

# TOML strings and comments (blanked before looking for dotted keys), and a run of more
# than MAX_DEPTH dots between bare words; both scan in linear time (possessive
# quantifiers, matches anchored at a word's start).
_STRING_OR_COMMENT = re.compile(
    r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*', re.DOTALL)
_DOTTED_KEY = re.compile(r"(?<![\w+\-:])(?:[\w+\-:]++[ \t]*+\.[ \t]*+){" + str(MAX_DEPTH + 1)
                         + "}")


def in_range(value: float, where: str, low: float, high: float, *,
             low_open: bool = False) -> None:
    """ConfigError naming ``where`` unless ``low <= value <= high`` (``low < value`` if open)."""
    if value < low or value > high or (low_open and value == low):
        if isinstance(low, int) and isinstance(high, int) and not low_open:
            accepted = f">= {low} and <= {high}"
        else:
            accepted = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        verb = "must be" if accepted.startswith(">") else "must be in"
        got = f"{value:g}" if isinstance(value, float) else str(value)
        raise ConfigError(where, f"{verb} {accepted}, got {got}", accepted=accepted)


def decode_toml(text: str | bytes, *, field: str, source: str = "") -> dict[str, Any]:
    """A study file's tables; every error about the text names ``field``.

    Bounded before the parser sees it: at most MAX_TEXT_BYTES of UTF-8, and nesting (of
    arrays, inline tables and dotted keys) at most MAX_DEPTH. Deeper TOML would exhaust
    tomllib's recursion (RecursionError) or, for dotted keys, take it quadratic time.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > MAX_TEXT_BYTES:
        raise ConfigError(field, f"is {size} bytes", accepted=f"at most {MAX_TEXT_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(field, "is not UTF-8 text", accepted="a UTF-8 TOML file") from None
    where = f"{source}: " if source and field == "study_file" else ""
    too_deep = ConfigError(field, f"{where}nested too deeply",
                           accepted=f"TOML nested at most {MAX_DEPTH} levels")
    if _DOTTED_KEY.search(_STRING_OR_COMMENT.sub("s", text)):
        raise too_deep
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(field, f"{where}invalid TOML: {exc}", accepted="TOML 1.0") from None
    except RecursionError:
        raise too_deep from None
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:  # no recursion here either
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise too_deep
        children = node.values() if isinstance(node, Mapping) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (Mapping, list)))
    return data
