"""One resolved dtype per study: the first result pins it, a worker that would mix is refused."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from optimizer.study import precision
from optimizer.study import storage as store
from optimizer.study.backends import BackendResult, RoundCallback, SyntheticBackend
from optimizer.study.manager import run_study
from tests.optimizer.conftest import small_study
from trainer.errors import ConfigError


class _Placed:
    """A synthetic worker whose ``auto`` resolves to ``auto`` and whose results name
    ``ran`` as the dtype they ran in (a worker that changed between check and run)."""

    def __init__(self, name: str, *, auto: str, ran: str | None = None) -> None:
        self.name, self.auto, self.ran = name, auto, ran or auto
        self.calls = 0
        self._inner = SyntheticBackend()

    def auto_dtype(self) -> str:
        return self.auto

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        self.calls += 1
        result = self._inner.run(params, on_round=on_round, cancel=cancel)
        dtype = params.get("dtype", "auto")
        record = {**result.record, "placement": {"dtype": self.ran if dtype == "auto" else dtype}}
        return replace(result, record=record)


def _study(cfg: Any) -> Any:
    return store.create_or_load(cfg, cfg.distributions[0], store.open_storage(cfg.storage_url),
                                must_exist=True)


def test_the_first_result_pins_the_dtype_and_a_mixing_worker_is_refused(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/p.db", n_trials=3, startup=2)
    amx = _Placed("amx-host", auto="bfloat16")
    run_study(cfg, [amx], resume=False)
    assert _study(cfg).user_attrs[precision.PIN_ATTR] == "bfloat16"
    avx2 = _Placed("avx2-host", auto="float32")
    more = replace(cfg, n_trials=5)
    with pytest.raises(ConfigError) as info:
        run_study(more, [avx2], resume=True)
    assert avx2.calls == 0  # refused before anything ran
    text = str(info.value)
    assert info.value.field == "dtype" and "avx2-host resolves dtype 'auto' to float32" in text
    assert "ran in bfloat16" in text and 'dtype = "bfloat16"' in text
    trials = _study(cfg).get_trials(deepcopy=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert TrialState.RUNNING not in {t.state for t in trials}


def test_a_result_in_another_dtype_is_not_stored_as_complete(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/q.db", n_trials=4, startup=2)
    run_study(replace(cfg, n_trials=2), [_Placed("a", auto="bfloat16")], resume=False)
    liar = _Placed("b", auto="bfloat16", ran="float32")
    with pytest.raises(ConfigError, match="b resolves dtype 'auto' to float32"):
        run_study(cfg, [liar], resume=True)
    assert liar.calls == 1
    trials = _study(cfg).get_trials(deepcopy=False)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert all("placement" not in t.user_attrs.get("record", {})
               or t.user_attrs["record"]["placement"]["dtype"] == "bfloat16"
               for t in trials if t.state == TrialState.COMPLETE)


def test_an_explicit_dtype_runs_anywhere(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path}/e.db", n_trials=2, startup=2)
    cfg = replace(cfg, profile={**cfg.profile, "dtype": "float32"})
    run_study(cfg, [_Placed("a", auto="bfloat16")], resume=False)
    assert _study(cfg).user_attrs[precision.PIN_ATTR] == "float32"
    more = replace(cfg, n_trials=3)
    run_study(more, [_Placed("b", auto="bfloat16")], resume=True)  # told float32: no check
    assert sum(t.state == TrialState.COMPLETE for t in _study(cfg).get_trials()) == 3
