"""The search space: Optuna distributions, and a [0, 1]^d encoding for the answer's GP.

Range parameters map to one unit coordinate each (log-scaled where the study
says so); categoricals map to one one-hot block, so the model-size axis is a
categorical of model names like any other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna.distributions as od

from trainer.helptext import meta


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    """One searched parameter: a float/int range or a categorical list of choices."""

    name: str = field(metadata=meta("a TrialSpec field name"))
    low: float | None = field(default=None, metadata=meta("lower bound (range params)"))
    high: float | None = field(default=None, metadata=meta("upper bound (range params)"))
    log: bool = field(default=False, metadata=meta("search on a log scale"))
    integer: bool = field(default=False, metadata=meta("integer range (from the TrialSpec type)"))
    choices: tuple[Any, ...] | None = field(default=None, metadata=meta("categorical choices"))

    @property
    def is_categorical(self) -> bool:
        return self.choices is not None

def to_distributions(space: Sequence[ParamSpec]) -> dict[str, od.BaseDistribution]:
    """Optuna distributions for ``study.ask(fixed_distributions=...)``."""
    out: dict[str, od.BaseDistribution] = {}
    for p in space:
        if p.choices is not None:
            out[p.name] = od.CategoricalDistribution(list(p.choices))
        elif p.integer:
            assert p.low is not None and p.high is not None
            out[p.name] = od.IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            assert p.low is not None and p.high is not None
            out[p.name] = od.FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out


def _unit(p: ParamSpec, value: float) -> float:
    assert p.low is not None and p.high is not None
    if p.log:
        return (math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
    return (value - p.low) / (p.high - p.low)


def _from_unit(p: ParamSpec, u: float) -> float | int:
    assert p.low is not None and p.high is not None
    u = min(max(u, 0.0), 1.0)
    if p.log:
        value = math.exp(math.log(p.low) + u * (math.log(p.high) - math.log(p.low)))
    else:
        value = p.low + u * (p.high - p.low)
    return round(value) if p.integer else value


def encode(space: Sequence[ParamSpec], params: Mapping[str, Any]) -> np.ndarray:
    """One row of unit coordinates (one-hot for categoricals)."""
    row: list[float] = []
    for p in space:
        if p.choices is not None:
            row.extend(1.0 if params[p.name] == c else 0.0 for c in p.choices)
        else:
            row.append(_unit(p, float(params[p.name])))
    return np.asarray(row, dtype=float)


def encode_many(space: Sequence[ParamSpec], rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    dim = sum(len(p.choices) if p.choices is not None else 1 for p in space)
    if not rows:
        return np.zeros((0, dim))
    return np.stack([encode(space, r) for r in rows])


def decode(space: Sequence[ParamSpec], row: np.ndarray) -> dict[str, Any]:
    """Inverse of ``encode`` (argmax of each one-hot block)."""
    out: dict[str, Any] = {}
    i = 0
    for p in space:
        if p.choices is not None:
            block = row[i:i + len(p.choices)]
            out[p.name] = p.choices[int(np.argmax(block))]
            i += len(p.choices)
        else:
            out[p.name] = _from_unit(p, float(row[i]))
            i += 1
    return out


def candidates(space: Sequence[ParamSpec], *, per_axis: int = 41, max_points: int = 4096,
               seed: int = 0) -> list[dict[str, Any]]:
    """A dense candidate set over the space: a full grid when small, else scrambled Sobol.

    Categoricals are always enumerated in full (the product with every continuous point).
    """
    ranges = [p for p in space if p.choices is None]
    cats = [p for p in space if p.choices is not None]
    n_cat = math.prod(len(p.choices or ()) for p in cats) if cats else 1
    budget = max(max_points // n_cat, 16)
    if not ranges:
        units = np.zeros((1, 0))
    elif per_axis ** len(ranges) <= budget:
        axis = np.linspace(0.0, 1.0, per_axis)
        units = np.array(list(itertools.product(axis, repeat=len(ranges))))
    else:
        from scipy.stats import qmc

        m = int(math.log2(budget))
        units = qmc.Sobol(d=len(ranges), scramble=True, rng=seed).random_base2(m)
    out: list[dict[str, Any]] = []
    for combo in itertools.product(*[p.choices or () for p in cats]):
        for u in units:
            row = {p.name: _from_unit(p, float(x)) for p, x in zip(ranges, u, strict=True)}
            row.update({p.name: c for p, c in zip(cats, combo, strict=True)})
            out.append(row)
    return out


def design_points(space: Sequence[ParamSpec], n: int, *, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` points of a scrambled Sobol sequence: the space-filling start-up design.

    Categoricals cycle through their choices so every choice is seen early.
    """
    return _rows(space, _sobol(space, n, seed=seed), offset=0)


def sliced_design_points(space: Sequence[ParamSpec], n: int, *, n_slices: int, index: int,
                         seed: int) -> list[dict[str, Any]]:
    """Slice ``index`` (of ``n_slices``) of one joint start-up design: ``n`` points each.

    For a family of studies fitted by one shared surrogate (one slice per distribution):
    the first ``n * n_slices`` points of a single scrambled Sobol sequence, point ``i``
    dealt to slice ``i % n_slices``. Independent draws per slice fill the space once per
    slice and overlap each other (three designs of three points leave the same corners
    empty); the joint design fills it once for the whole family, which is what the shared
    surface sees, and each slice, a stride of a low-discrepancy sequence, stays spread.
    Deterministic in its arguments, so every process creating a slice's study agrees.
    Categoricals cycle from a per-slice offset, so the slices start on different choices.
    """
    if not 0 <= index < n_slices:
        raise ValueError(f"slice {index} is not in [0, {n_slices})")
    units = _sobol(space, n * n_slices, seed=seed)[index::n_slices]
    return _rows(space, units, offset=index)


def _sobol(space: Sequence[ParamSpec], n: int, *, seed: int) -> np.ndarray:
    """The first ``n`` points of a scrambled Sobol sequence over the range parameters."""
    from scipy.stats import qmc

    d = sum(p.choices is None for p in space)
    m = max(1, math.ceil(math.log2(max(n, 2))))
    return qmc.Sobol(d=d, scramble=True, rng=seed).random_base2(m)[:n] if d else np.zeros((n, 0))


def _rows(space: Sequence[ParamSpec], units: np.ndarray, *, offset: int) -> list[dict[str, Any]]:
    ranges = [p for p in space if p.choices is None]
    cats = [p for p in space if p.choices is not None]
    out: list[dict[str, Any]] = []
    for i, u in enumerate(units):
        row = {p.name: _from_unit(p, float(x)) for p, x in zip(ranges, u, strict=True)}
        row.update({p.name: (p.choices or ())[(i + offset) % len(p.choices or ())] for p in cats})
        out.append(row)
    return out
