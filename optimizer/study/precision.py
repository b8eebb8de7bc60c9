"""One resolved dtype per study: trials of a study never mix float32 and bfloat16.

A trial's ``dtype = "auto"`` is resolved by the worker that runs it (bf16 on CUDA and
on CPUs with native bf16, fp32 elsewhere: :mod:`trainer.devices`). All trials of a
study share problems and seeds so that their differences are low-noise (common
random numbers); a trial run in another precision would add a difference of its
own. So the first finished trial pins the study's dtype (a study user attribute),
and from then on:

* before a trial is sent, a backend that says what ``auto`` resolves to on its
  worker (``auto_dtype()``) and would resolve differently is refused with a
  ConfigError naming both dtypes (the study stops instead of mixing);
* after a trial, a result whose record names another dtype fails the same way
  (a worker that changed between the check and the run).

A profile that names ``float32`` or ``bfloat16`` explicitly needs none of this:
every worker runs what it is told.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from trainer.errors import ConfigError

PIN_ATTR = "dtype"


def result_dtype(record: Mapping[str, Any]) -> str | None:
    """The resolved dtype a trial's run record names (None: the trainer names none)."""
    placement = record.get("placement")
    if isinstance(placement, Mapping):
        dtype = placement.get("dtype")
        return dtype if isinstance(dtype, str) else None
    return None


def pinned(study: optuna.Study) -> str | None:
    value = study.user_attrs.get(PIN_ATTR)
    return value if isinstance(value, str) else None


def _mismatch(study: optuna.Study, worker: str, got: str, want: str) -> ConfigError:
    return ConfigError(
        "dtype", f"{worker} resolves dtype 'auto' to {got}, but the trials of study "
        f"{study.study_name!r} ran in {want}; mixing them would break the trials' common "
        "random numbers", accepted=f"a worker that resolves 'auto' to {want}, or "
        f"dtype = \"{want}\" in the study's [profile] (slower on hardware without it)")


def check_before(study: optuna.Study, params: Mapping[str, Any], backend: object) -> None:
    """Refuse to send a trial to a backend whose ``auto`` resolves off the pinned dtype."""
    want = pinned(study)
    probe = getattr(backend, "auto_dtype", None)
    if want is None or params.get("dtype", "auto") != "auto" or probe is None:
        return
    got = probe()
    if got is not None and got != want:
        raise _mismatch(study, str(getattr(backend, "name", "the worker")), got, want)


def pin_after(study: optuna.Study, record: Mapping[str, Any], backend: object) -> None:
    """Pin the study's dtype at its first result; raise ConfigError on a later mismatch."""
    got = result_dtype(record)
    if got is None:
        return
    want = pinned(study)
    if want is None:
        study.set_user_attr(PIN_ATTR, got)
    elif got != want:
        raise _mismatch(study, str(getattr(backend, "name", "the worker")), got, want)
