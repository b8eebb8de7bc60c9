from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from optimizer.cli import main
from trainer.errors import ConfigError
from trainer.evaluation import evaluator
from trainer.evaluation.evaluator import EvalConfig, evaluate_model
from trainer.evaluation.generation import GenerationStats
from trainer.evaluation.humaneval import select_problems
from trainer.evaluation.passk import pass_at_k


def test_pipeline_counts_known_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake sampler returns the canonical body for c_i of n samples: pass@k must be exact."""
    problems = select_problems("3")
    wanted = [3, 0, 1]
    n = 4

    def fake_sampler(model: Any, tokenizer: Any, prompts: list[str], **kw: Any) -> Any:
        out = []
        for p, c in zip(problems, wanted, strict=True):
            # the model sees the stripped prompt; re-create what it would write
            good = p["prompt"][len(p["prompt"].rstrip()):] + p["canonical_solution"] + "\ndef x():"
            out.append([good] * c + ["\n    return None  # wrong"] * (n - c))
        return out, GenerationStats(tokens=10, seconds=1.0, forward_rows=10)

    monkeypatch.setattr(evaluator, "sample_completions", fake_sampler)
    report = evaluate_model(None, None, config=EvalConfig(problems="3", n=n, ks=(1, 2)))
    assert report.correct == tuple(wanted)
    expected = sum(pass_at_k(n, c, 2) for c in wanted) / 3
    assert report.pass_at["pass@2"] == pytest.approx(expected)
    assert report.pass_at["pass@1"] == pytest.approx(sum(wanted) / (3 * n))
    assert report.stderr["pass@1"] > 0
    assert len(report.samples) == 3 * n
    assert report.samples[0].passed and not report.samples[-1].passed
    data = report.to_dict()
    for key in ("problems", "n", "config", "timings", "versions", "isolation"):
        assert key in data
    json.dumps(data)


@pytest.mark.parametrize("kwargs,field", [
    ({"n": 0}, "samples"), ({"n": 5, "ks": (10,)}, "k"), ({"temperature": 0.0}, "temperature"),
    ({"top_p": 1.5}, "top_p"), ({"timeout": 0}, "timeout"), ({"workers": 0}, "workers"),
    # issue 10, item 14: logits / 1e-300 overflow to inf, then sampling fails as INTERNAL
    ({"temperature": 1e-300}, "temperature"), ({"temperature": float("nan")}, "temperature"),
])
def test_config_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        EvalConfig(**kwargs)
    assert info.value.field == field


def test_cli_scores_a_samples_file_in_input_order(tmp_path: Path, capsys: Any) -> None:
    problems = select_problems("3")
    rows = [
        {"task_id": problems[1]["task_id"], "completion": problems[1]["canonical_solution"]},
        {"task_id": problems[0]["task_id"], "completion": "    return 42\n"},
        {"task_id": problems[0]["task_id"], "completion": problems[0]["canonical_solution"]},
        {"task_id": problems[2]["task_id"], "completion": "    while True: pass\n"},
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    assert main(["eval", "--samples", str(samples), "--results", str(out), "--k", "1",
                 "--timeout", "1"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in results] == [r["task_id"] for r in rows]
    assert [r["passed"] for r in results] == [True, False, True, False]
    assert results[0]["result"] == "passed"
    assert results[3]["result"] == "timed out"
    assert all(isinstance(r["result"], str) for r in results)
    assert "pass@1" in capsys.readouterr().out


@pytest.mark.parametrize("content,needle", [
    ("not json\n", "invalid JSON"),
    ('{"task_id": "HumanEval/0"}\n', "completion"),
    ('{"task_id": "HumanEval/999", "completion": ""}\n', "unknown task id"),
])
def test_cli_rejects_bad_samples_files(tmp_path: Path, capsys: Any, content: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main(["eval", "--samples", str(path)]) == 2
    assert needle in capsys.readouterr().err


def test_cli_rejects_missing_samples_file(capsys: Any) -> None:
    assert main(["eval", "--samples", "/nonexistent/x.jsonl"]) == 2
    assert "--samples" in capsys.readouterr().err


def test_cli_eval_on_tiny_model_writes_a_report(tmp_path: Path, capsys: Any) -> None:
    report = tmp_path / "report.json"
    assert main(["eval", "--model", "tiny-random", "--problems", "2", "--samples", "2", "--k", "1,2",
                 "--max-new-tokens", "4", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["problems"] == ["HumanEval/0", "HumanEval/1"]
    assert set(data["pass_at"]) == {"pass@1", "pass@2"}
    assert data["config"]["seed"] == 0 and data["n"] == 2
    assert "pass@2" in capsys.readouterr().out
