"""Item 16 for the optimizer: on all interfaces the start-up line names the address really
bound (not 127.0.0.1) and a server without a token says loudly that it is open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def test_serve_on_all_interfaces_prints_the_real_bind_and_warns(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SCALEFED_OPTIMIZER_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimizer.cli", "serve", "--port", "0", "--host", "0.0.0.0",
         "--backend", "synthetic", "--storage-root", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**env, "PYTHONUNBUFFERED": "1"}, cwd=Path(__file__).resolve().parents[3])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 0.0.0.0:" in line and "dial 127.0.0.1:" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "WARNING" in err and "token" in err, err
