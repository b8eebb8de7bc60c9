"""The CLI end to end on the synthetic backend: run, status, best --json, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_run_status_best_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = str(ROOT / "studies" / "quickstart.toml")
    storage = f"sqlite:///{tmp_path}/qs.db"
    common = [study, "--storage", storage]
    assert main(["study", "run", *common, "--backend", "synthetic", "--no-progress",
                 "--n-trials", "5", "--distribution", "iid"]) == 0
    out = capsys.readouterr().out
    assert "quickstart/iid: 5 complete" in out and "| dirichlet-0.1 |" in out
    assert main(["study", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "complete 5" in out and "(not started)" in out
    assert main(["study", "best", *common, "--json", "--distribution", "iid"]) == 0
    best = json.loads(capsys.readouterr().out)["iid"]
    pred = best["answer"]["predicted"]
    assert pred["lower"] <= pred["mean"] <= pred["upper"]
    assert 0.25 <= pred["params"]["scaling_factor"] <= 8.0  # the quickstart's s range
    out_dir = tmp_path / "report"
    assert main(["study", "report", *common, "--out", str(out_dir)]) == 0
    assert (out_dir / "factor-iid.png").stat().st_size > 1000
    assert (out_dir / "history.png").exists()
    assert "data:image/png;base64," in (out_dir / "index.html").read_text()
    assert "| iid |" in (out_dir / "answer.md").read_text()


def test_bad_flags_and_files_give_clear_errors(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ndistributions = [{kind = "iid"}]\n'
                   '[space.scaling_factor]\nlow = 2.0\nhigh = 1.0\n')
    assert main(["study", "status", str(bad)]) == 2
    assert "space.scaling_factor.low" in capsys.readouterr().err
    study = str(ROOT / "studies" / "quickstart.toml")
    assert main(["study", "resume", study, "--storage", f"sqlite:///{tmp_path}/none.db",
                 "--backend", "synthetic", "--no-progress"]) == 2
    assert "scalefed study run" in capsys.readouterr().err
    assert main(["study", "run", study, "--storage", "mysql://x"]) == 2
    assert "--storage" in capsys.readouterr().err
