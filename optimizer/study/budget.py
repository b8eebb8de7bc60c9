"""Which asked trials run: the budget by creation order, and points that must not run twice.

A trial the runner asks is never run, but PRUNED with the reason as a user attribute,
when it is

* ``surplus``: a fresh trial beyond ``n_trials`` by creation order, so concurrent
  runners never overshoot the budget;
* ``duplicate_of`` a retry: a second retry of the same failed trial (a re-queue race);
* ``duplicate_of`` a concurrent proposal: the sampler's candidates are a fixed grid, so
  two runners proposing at once from the same data can pick the same point. A trial
  whose point another trial already has, where that trial's point was not yet
  visible when this one was proposed (so the sampler could not avoid it), yields if
  the other has the lower number or has already been cleared to run (``CLEARED``).
  Of two such trials exactly one yields, so neither both run nor both vanish, except
  when one is cleared in the few milliseconds between the other's write and read. A
  point the sampler chose knowing the other trial (a deliberate replicate), the
  enqueued design and retries never yield. The runner asks again after a yield, and
  the new proposal sees the point as taken.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from optimizer.study.lease import REQUEUED_FROM, RETRY_OF

SURPLUS = "surplus"
DUPLICATE_OF = "duplicate_of"
CLEARED = "scalefed:cleared"  # system attribute: this trial passed never_run_reason and runs


def is_fresh(t: FrozenTrial) -> bool:
    """A first attempt that counts against the budget (not a retry, not a duplicate)."""
    return RETRY_OF not in t.user_attrs and DUPLICATE_OF not in t.user_attrs


def spent(trials: Sequence[FrozenTrial], *, n_trials: int, stopped: bool) -> bool:
    """Nothing queued, and the budget is used up or the stop rule met."""
    waiting = any(x.state == TrialState.WAITING for x in trials)
    fresh = sum(1 for x in trials if is_fresh(x))
    return not waiting and (fresh >= n_trials or stopped)


def never_run_reason(me: FrozenTrial, trials: Sequence[FrozenTrial], *, n_trials: int,
                     known: Collection[int] = ()) -> tuple[str, Any] | None:
    """Why the just-asked trial ``me`` must not run (see the module docstring), or None.

    ``known``: ids of the trials whose points were stored before ``me`` was proposed.
    """
    if is_fresh(me):
        rank = sum(1 for x in trials if is_fresh(x) and x._trial_id < me._trial_id)
        return (SURPLUS, True) if rank >= n_trials else _same_point(me, trials, known)
    source = me.user_attrs.get(REQUEUED_FROM)
    twins = [x for x in trials if x.user_attrs.get(REQUEUED_FROM) == source]
    first = min(twins, key=lambda x: x._trial_id)
    return (DUPLICATE_OF, first.number) if first._trial_id != me._trial_id else None


def _same_point(me: FrozenTrial, trials: Sequence[FrozenTrial],
                known: Collection[int]) -> tuple[str, Any] | None:
    if me.user_attrs.get("design"):
        return None
    for x in trials:
        if (x._trial_id == me._trial_id or x._trial_id in known or x.params != me.params
                or x.state == TrialState.PRUNED or DUPLICATE_OF in x.user_attrs):
            continue
        if x._trial_id < me._trial_id or x.system_attrs.get(CLEARED):
            return DUPLICATE_OF, x.number
    return None
