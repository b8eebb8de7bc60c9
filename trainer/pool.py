"""The loaded base models a worker keeps between trials.

Loading a model costs seconds, so a finished trial hands its model back for
the next one. The pool is keyed by :func:`trainer.models.model_key` (a
directory by its real path, so ``dir``, ``dir/`` and ``./dir`` share one copy)
and keeps at most ``max_idle`` idle models, dropping the least recently used:
requests naming many models cannot pile copies up in memory.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator

from trainer.models import LoadedModel, load_model, model_key

DEFAULT_MAX_IDLE = 2


class ModelPool:
    """Idle loaded models by key; a model is lent to one trial at a time."""

    def __init__(self, *, loader: Callable[..., LoadedModel] = load_model,
                 max_idle: int = DEFAULT_MAX_IDLE) -> None:
        if max_idle < 0:
            raise ValueError(f"max_idle must be >= 0, got {max_idle}")
        self._loader = loader
        self.max_idle = max_idle
        self._idle: list[tuple[str, LoadedModel]] = []  # oldest first
        self._lock = threading.Lock()
        self.loads = 0

    def idle_keys(self) -> list[str]:
        """Keys of the idle models, least recently returned first."""
        with self._lock:
            return [key for key, _ in self._idle]

    def _take(self, key: str) -> LoadedModel | None:
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                if self._idle[i][0] == key:
                    return self._idle.pop(i)[1]
        return None

    def _give_back(self, key: str, loaded: LoadedModel) -> None:
        with self._lock:
            self._idle.append((key, loaded))
            dropped = self._idle[:max(len(self._idle) - self.max_idle, 0)]
            del self._idle[:len(dropped)]
        if dropped:
            del dropped, loaded
            gc.collect()  # free the dropped weights now, not at some later collection

    @contextlib.contextmanager
    def borrow(self, name: str, *, dtype: str | None = None,
               device: str | None = None) -> Iterator[LoadedModel]:
        """A loaded ``name`` for one trial; it goes back to the pool if the trial left
        it without an adapter (also after a failed or cancelled trial).

        With ``dtype`` and ``device`` (resolved, see :mod:`trainer.devices`) the copy is
        kept per placement: a bf16 copy on ``cuda:1`` is another model than fp32 on the CPU.
        """
        path = model_key(name)
        placed = dtype is not None or device is not None
        key = f"{path} [{dtype or 'float32'} on {device or 'cpu'}]" if placed else path
        loaded = self._take(key)
        if loaded is None:
            if placed:
                loaded = self._loader(path, dtype=dtype or "float32", device=device or "cpu")
            else:
                loaded = self._loader(path)
            with self._lock:
                self.loads += 1
        try:
            yield loaded
        finally:
            # A model whose adapter could not be removed is dropped, not reused.
            if not hasattr(loaded.model, "peft_config"):
                self._give_back(key, loaded)
