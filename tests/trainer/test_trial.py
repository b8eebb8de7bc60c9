from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from optimizer.cli import main
from trainer.contract import EvalProgressEvent, RoundEvent, TrialEvent, TrialSpec
from trainer.errors import ConfigError, TrialCancelledError
from trainer.trial import run_trial

TINY: dict[str, Any] = {
    "model": "tiny-random", "clients": 4, "participation": 0.5, "client_steps": 4,
    "local_steps": 1, "batch_size": 2, "seq_len": 64, "max_examples": 60, "problems": "2",
    "samples": 2, "k": 2, "max_new_tokens": 4,
}


def test_trial_on_tiny_model_reports_rounds_evaluation_and_record() -> None:
    events: list[TrialEvent] = []
    spec = TrialSpec(**TINY)
    result = run_trial(spec, on_event=events.append, progress=False)
    rounds = [e for e in events if isinstance(e, RoundEvent)]
    assert [e.round for e in rounds] == [1, 2]  # 4 steps / (2 clients * 1 step)
    assert all(len(e.clients) == 2 for e in rounds)
    assert any(isinstance(e, EvalProgressEvent) and e.stage == "execute" for e in events)
    assert result.problems == ("HumanEval/0", "HumanEval/1") and result.n == 2 and result.k == 2
    assert 0.0 <= result.pass_at_1 <= result.pass_at_k <= 1.0
    record = json.loads(json.dumps(result.record))
    assert record["params"] == spec.to_dict()
    assert "pass@2" in record and len(record["training"]["per_round"]) == 2
    assert record["timings"]["total_s"] > 0 and "torch" in record["versions"]


def test_cancelled_trial_raises_and_leaves_the_model_reusable() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrialCancelledError):
        run_trial(TrialSpec(**TINY), cancel=cancel, progress=False)
    # the pooled base model carries no adapter: the next trial runs normally
    run_trial(TrialSpec(**TINY), progress=False)


def test_train_cli_writes_a_run_record(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "run.json"
    args = ["train", "--quiet", "--out", str(out)]
    for key, value in TINY.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert record["params"]["budget_mode"] == "client_steps"
    assert "pass@2" in record
    assert "pass@2" in capsys.readouterr().out


@pytest.mark.parametrize("args,field", [
    (["--participation", "1.5"], "participation"),
    (["--distribution", "zipf"], "distribution"),
    (["--rounds", "2", "--client-steps", "4"], "--rounds"),
    (["--samples", "5", "--k", "10"], "samples"),
])
def test_train_cli_rejects_bad_flags(args: list[str], field: str, capsys: Any) -> None:
    assert main(["train", *args]) == 2
    assert field in capsys.readouterr().err


def test_spec_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError) as info:
        TrialSpec.from_dict({"scaling_factr": 1.0})
    assert info.value.field == "scaling_factr"
