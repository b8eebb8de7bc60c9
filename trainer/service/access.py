"""Which models and corpora a worker reads: the operator's allow-lists and root directories.

A trial request names its model and corpus, and the trial function reads
whatever path it is given. On a worker that is a trust boundary: the operator
decides at start-up what may be read (``--allow-model``, ``--model-root``,
``--allow-corpus``, ``--corpus-root``) and a request only picks among that.

A path is accepted when, resolved (``~`` expanded, relative to the worker's
working directory, symlinks followed), it lies inside a root; so ``..``, a
second spelling or a symlink out of a root does not widen it. Rejections do not
say whether the path exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainer.errors import ConfigError
from trainer.models import PRESETS

STDLIB_CORPUS = "stdlib"


def resolve_root(path: Path | str, *, field: str) -> Path:
    """An operator's root directory, resolved; ConfigError on ``field`` if it is not one."""
    try:
        root = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise ConfigError(field, f"{path} cannot be used: {exc}",
                          accepted="an existing directory") from None
    if not root.is_dir():
        raise ConfigError(field, f"{path} is not a directory", accepted="an existing directory")
    return root


def inside_roots(name: str, roots: Sequence[Path]) -> bool:
    """Whether ``name``, as a path resolved on this worker, lies in one of ``roots``."""
    if not roots or not name:
        return False
    try:
        resolved = Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a loop, no home, an embedded NUL
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def _short(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "...")


def _choices(names: Sequence[str], roots: Sequence[Path], what: str) -> str:
    parts = list(names)
    if roots:
        parts.append(f"a {what} under {', '.join(str(r) for r in roots)}")
    return ", ".join(parts) or "none"


def check_model(name: str, *, allowed: Sequence[str], roots: Sequence[Path]) -> None:
    """Raise ConfigError on ``model`` unless the operator allows ``name``.

    Allowed: a name in ``allowed``; the presets when ``allowed`` is empty; a
    directory under one of ``roots``. Hub ids only when listed in ``allowed``.
    """
    if name in allowed or (not allowed and name in PRESETS) or inside_roots(name, roots):
        return
    names = list(allowed) or list(PRESETS)
    raise ConfigError("model", f"{_short(name)} is not a model this worker serves",
                      accepted=_choices(names, roots, "model directory"))


def check_corpus(source: str, *, allowed: Sequence[str], roots: Sequence[Path]) -> None:
    """Raise ConfigError on ``corpus`` unless the operator allows ``source``.

    Allowed: ``stdlib`` and its filtered forms (``stdlib#doctest``); a source whose
    location (the part before ``#``) is in ``allowed`` (e.g. an ``hf:`` data set); a
    directory or data file under one of ``roots``.
    """
    location = source.partition("#")[0]
    if location == STDLIB_CORPUS or location in allowed:
        return
    if not location.startswith("hf:") and inside_roots(location, roots):
        return
    raise ConfigError("corpus", f"{_short(source)} is not a corpus this worker serves",
                      accepted=_choices([STDLIB_CORPUS, *allowed], roots,
                                        "source directory or data file"))
