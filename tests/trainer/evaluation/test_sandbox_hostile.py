"""Hostile completions: each scores failed, touches nothing outside its scratch dir, leaves no
process behind, and the evaluator keeps working."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from trainer.evaluation.sandbox import Sandbox, SandboxConfig, Verdict

MARKER = f"hostile-{uuid.uuid4().hex}"
PROBLEM = {"task_id": "hostile/0", "prompt": "def f(x):\n",
           "test": "def check(c):\n    assert c(1) == 2\n", "entry_point": "f"}
# Module-level attack code runs after "def f(x):\n    return 0\n"; the honest test then fails,
# so only a forged pass could score True.
ATTACKS = {
    "infinite_loop": "while True:\n    pass\n",
    "ignore_sigalrm": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
                      "while True:\n    pass\n",
    "swallow_timeout": "while True:\n    try:\n        while True: pass\n"
                       "    except BaseException:\n        pass\n",
    "fork_flood": "import posix\nwhile True:\n    try:\n        posix.fork()\n"
                  "    except OSError:\n        pass\n",
    "memory_hog": "hog = []\nwhile True:\n    hog.append(bytearray(50 * 2**20))\n",
    "memory_hog_at_once": "hog = bytearray(8 * 2**30)\n",
    "sys_exit_0": "import sys\nsys.exit(0)\n",
    "os_exit_0": "import os\nos._exit(0)\n",
    "kill_parent": "import posix, signal\nfor pid in (posix.getppid(), 1, 0, -1):\n"
                   "    try:\n        posix.kill(pid, signal.SIGKILL)\n"
                   "    except OSError:\n        pass\n",
    "killpg_0": "import posix, signal\nposix.killpg(0, signal.SIGKILL)\n",
    "setsid_grandchild": (
        "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n"
        "    if posix.fork() == 0:\n"
        "        posix.execv('/bin/sh', ['sh', '-c', 'sleep 30; echo MARKER'])\n"
        "    posix._exit(0)\ntime.sleep(0.2)\n"),
    "stdout_flood": "import posix\nprint('x' * 10**7)\nwhile True:\n"
                    "    posix.write(1, b'y' * 65536)\n    posix.write(2, b'z' * 65536)\n",
    "huge_file": "for i in range(100):\n    with open(f'big{i}', 'wb') as fh:\n"
                 "        for _ in range(2**10):\n            fh.write(b'0' * 2**20)\n",
    "delete_outside": "import posix\nposix.unlink('OUTSIDE/canary.txt')\n",
    "write_outside": "open('OUTSIDE/evil.txt', 'w').write('x')\n",
    "write_tmp": "open('/tmp/MARKER', 'w').write('x')\n",
    "network": "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=0.5)\n",
    "forged_output": "print('passed')\nimport posix\nposix.write(1, b'passed\\n')\n"
                     "posix._exit(0)\n",
    "forged_fds": "import posix\nfor fd in range(300):\n    try:\n"
                  "        posix.write(fd, b'passed\\n')\n    except OSError:\n        pass\n"
                  "posix._exit(0)\n",
    "monkeypatch": (
        "import builtins, os, posix, atexit, sys\nreal = posix.write\n"
        "os.write = lambda fd, b: real(fd, b.replace(b'failed', b'passed'))\n"
        "builtins.exit = builtins.quit = lambda *a: posix._exit(0)\n"
        "builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "atexit.register(lambda: real(3, b'passed'))\nsys.excepthook = lambda *a: None\n"),
    "read_harness_pipe": (
        "import posix\ngot = b''\nfor fd in range(300):\n    try:\n"
        "        posix.set_blocking(fd, False)\n        got += posix.read(fd, 4096)\n"
        "    except OSError:\n        pass\n"
        "for fd in range(300):\n    for word in got.split() or [b'x']:\n        try:\n"
        "            posix.write(fd, word + b' 6\\npassed')\n        except OSError:\n"
        "            pass\n"),
}


def _nobody_processes() -> list[int]:
    """Processes running as uid nobody (the sandbox's uid when we are root)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ValueError):
            continue
        uid_line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
        if uid_line.split()[1:2] == ["65534"]:
            found.append(int(entry))
    return found


def _marked_processes() -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARKER.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def outcome() -> Any:
    # Not under /tmp (the sandbox has its own /tmp) and world-writable, so file permissions
    # alone would not stop uid nobody: only the sandbox's read-only view of the disk does.
    outside = Path(tempfile.mkdtemp(prefix=".sandbox-outside-", dir=Path(__file__).parent))
    canary = outside / "canary.txt"
    canary.write_text("intact")
    outside.chmod(0o777)
    canary.chmod(0o666)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    items = []
    for name in sorted(ATTACKS):
        code = (ATTACKS[name].replace("OUTSIDE", str(outside)).replace("MARKER", MARKER)
                .replace("PORT", str(port)))
        items.append((PROBLEM, "    return 0\n" + code))
    with Sandbox(config=SandboxConfig(timeout=1.0, workers=2, max_processes=16)) as sandbox:
        verdicts = sandbox.check_many(items)
        leftovers = _marked_processes() + (_nobody_processes() if os.geteuid() == 0 else [])
        time.sleep(0.3)  # anything that escaped would still be around
        leftovers += _marked_processes()
        still_works = sandbox.check(PROBLEM, "    return x + 1\n")
    try:
        connected = listener.accept()
    except BlockingIOError:
        connected = None
    listener.close()
    yield {"verdicts": dict(zip(sorted(ATTACKS), verdicts)), "outside": outside,
           "canary": canary, "leftovers": leftovers, "still_works": still_works,
           "connected": connected}
    shutil.rmtree(outside)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_scores_failed(attack: str, outcome: dict[str, Any]) -> None:
    verdict: Verdict = outcome["verdicts"][attack]
    assert not verdict.passed, verdict
    assert verdict.result != "passed"
    assert verdict.seconds < 5.0


def test_nothing_outside_touched(outcome: dict[str, Any]) -> None:
    assert outcome["canary"].read_text() == "intact"
    assert sorted(p.name for p in outcome["outside"].iterdir()) == ["canary.txt"]
    assert not Path(f"/tmp/{MARKER}").exists()
    assert not any(Path("/tmp").glob("big*"))


def test_no_process_left_behind(outcome: dict[str, Any]) -> None:
    assert outcome["leftovers"] == []


def test_no_network(outcome: dict[str, Any]) -> None:
    assert outcome["connected"] is None
    assert outcome["verdicts"]["network"].result.startswith("failed: ")


def test_evaluator_still_works(outcome: dict[str, Any]) -> None:
    assert outcome["still_works"].passed, outcome["still_works"]


def test_limits_are_what_stopped_them(outcome: dict[str, Any]) -> None:
    verdicts = outcome["verdicts"]
    # Outside /tmp the file system is read-only; a checkout under /tmp is hidden
    # entirely behind the sample's private /tmp. Either way the write never lands.
    for attack in ("write_outside", "delete_outside"):
        result = verdicts[attack].result
        assert "Read-only file system" in result or "No such file or directory" in result, result
    assert "File too large" in verdicts["huge_file"].result
    assert verdicts["memory_hog_at_once"].result == "failed: "  # MemoryError()
    assert "unreachable" in verdicts["network"].result


def test_timeouts_are_reported_as_such(outcome: dict[str, Any]) -> None:
    for attack in ("infinite_loop", "ignore_sigalrm", "swallow_timeout"):
        assert outcome["verdicts"][attack].result == "timed out"
