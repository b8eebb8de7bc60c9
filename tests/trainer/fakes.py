"""A fake trial function with the real TrialFunction contract, for service tests.

It emits RoundEvents with short sleeps, polls ``cancel`` while it "trains",
emits evaluation progress and returns a TrialResult derived from the spec.
Tests running the server in-process tune it through the instance's attributes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from trainer.contract import (
    EvalProgressEvent,
    RoundEvent,
    TrialEvent,
    TrialResult,
    TrialSpec,
    planned_rounds,
)
from trainer.errors import TrialCancelledError


def fake_score(spec: TrialSpec) -> float:
    """A smooth, made-up pass@k with its optimum near s = 1.2."""
    return max(0.0, 0.3 - 0.1 * (spec.scaling_factor - 1.2) ** 2)


@dataclass(kw_only=True)
class FakeTrial:
    """Callable as ``fn(spec, *, on_event=None, cancel=None) -> TrialResult``."""

    round_seconds: float = 0.01
    fail: BaseException | None = None  # raised after the first round when set
    started: threading.Event = field(default_factory=threading.Event)
    calls: list[TrialSpec] = field(default_factory=list)
    cancelled: int = 0
    finished: int = 0

    def __call__(
        self,
        spec: TrialSpec,
        *,
        on_event: Callable[[TrialEvent], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TrialResult:
        self.calls.append(spec)
        self.started.set()
        emit = on_event or (lambda _event: None)
        cancel = cancel or threading.Event()
        total = planned_rounds(spec)
        n_clients = max(1, round(spec.clients * spec.participation))
        for r in range(1, total + 1):
            if cancel.wait(self.round_seconds):
                self.cancelled += 1
                raise TrialCancelledError(f"cancelled in round {r} of {total}")
            emit(RoundEvent(round=r, total_rounds=total, clients=tuple(range(n_clients)),
                            train_loss=2.0 / r, update_norm=spec.scaling_factor / r,
                            seconds=self.round_seconds, intermediate=0.1 * r if r % 2 else None))
            if self.fail is not None:
                raise self.fail
        problems = tuple(f"HumanEval/{i}" for i in range(int(spec.problems) if spec.problems.isdigit()
                                                         else 3))
        for done in (len(problems) // 2, len(problems)):
            emit(EvalProgressEvent(stage="generate", done=done * spec.samples,
                                   total=len(problems) * spec.samples))
        score = fake_score(spec)
        correct = tuple(round(score * spec.samples) if i % 2 == 0 else 0
                        for i in range(len(problems)))
        self.finished += 1
        return TrialResult(
            pass_at_1=score / 2, pass_at_k=score, k=spec.k, stderr=0.01, stderr_at_1=0.005,
            n=spec.samples, problems=problems, correct=correct,
            timings={"train": total * self.round_seconds, "eval": 0.0},
            record={"spec": spec.to_dict(), "rounds": total, "fake": True, "nested": {"a": [1, 2]}},
        )


# For ``scalefed trainer serve --trial-fn tests.trainer.fakes:fake_trial``.
fake_trial = FakeTrial(round_seconds=0.05)
