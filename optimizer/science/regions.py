"""Where the optimum is, and how sure: regions from joint posterior draws of the surface.

Two regions answer two questions, both from the same draws of the latent pass@k
surface over the candidate set:

* the **argmax region**: the smallest set of candidates that holds ``mass`` (90%)
  of the posterior distribution of the argmax (s*, p*);
* the **epsilon-optimal region**: every candidate whose probability of lying within
  ``epsilon`` of the best value of its draw is at least ``mass``.

A flat landscape gives a wide epsilon region, which is the honest answer: "any s in
[a, b] at p in [c, d] is as good as the best, to within epsilon". Regions are
reported as their bounding box per axis (and the list of categorical choices).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optimizer.science import space as space_mod
from optimizer.science.surrogate import Surrogate


@dataclass(frozen=True, kw_only=True)
class Region:
    """A set of candidate points, summarised by its bounding box."""

    mass: float = field(metadata={"help": "the probability level the region was built for"})
    bounds: Mapping[str, tuple[Any, ...]] = field(
        metadata={"help": "range params: (low, high); categoricals: the choices inside"})
    n_points: int = field(metadata={"help": "candidates inside (0: no point qualifies)"})

    def describe(self) -> str:
        """``s in [0.8, 1.6], p in [0.3, 0.7]`` (or a note that the region is empty)."""
        if self.n_points == 0:
            return "empty (no point qualifies yet)"
        parts = []
        for name, b in self.bounds.items():
            short = {"scaling_factor": "s", "participation": "p"}.get(name, name)
            if len(b) == 2 and all(isinstance(v, (int, float)) for v in b):
                parts.append(f"{short} in [{b[0]:.3g}, {b[1]:.3g}]")
            else:
                parts.append(f"{short} in {{{', '.join(map(str, b))}}}")
        return ", ".join(parts)


def bounding_region(space: Sequence[Any], points: Sequence[Mapping[str, Any]],
                    mass: float) -> Region:
    """The bounding box of ``points`` (categoricals: the choices that occur)."""
    bounds: dict[str, tuple[Any, ...]] = {}
    for p in space:
        values = [pt[p.name] for pt in points]
        if not values:
            continue
        if p.choices is not None:
            bounds[p.name] = tuple(c for c in p.choices if c in values)
        else:
            bounds[p.name] = (float(min(values)), float(max(values)))
    return Region(mass=mass, bounds=bounds, n_points=len(points))


def posterior_regions(surrogate: Surrogate, cands: Sequence[Mapping[str, Any]], *,
                      epsilon: float, mass: float = 0.9, n_draws: int = 512,
                      max_points: int = 400, seed: int = 0) -> tuple[Region, Region]:
    """(argmax region, epsilon-optimal region) from ``n_draws`` joint posterior draws.

    The joint draw is cubic in the number of points, so only the ``max_points``
    candidates with the highest upper confidence bound take part: a point outside
    them is almost never the argmax nor within epsilon of it.
    """
    rng = np.random.default_rng(seed)
    Xc = space_mod.encode_many(surrogate.space, cands)
    mean, sd = surrogate.predict_encoded(Xc)
    keep = np.argsort(-(mean + 2.0 * sd))[:max_points]
    draws = surrogate.sample_latent(Xc[keep], n_draws, rng)
    winners = np.bincount(np.argmax(draws, axis=1), minlength=len(keep)) / n_draws
    order = np.argsort(-winners)
    cutoff = int(np.searchsorted(np.cumsum(winners[order]), mass - 1e-12)) + 1
    argmax_pts = [cands[keep[i]] for i in order[:cutoff] if winners[i] > 0]
    near = (draws >= draws.max(axis=1, keepdims=True) - epsilon).mean(axis=0)
    eps_pts = [cands[keep[i]] for i in np.flatnonzero(near >= mass)]
    return (bounding_region(surrogate.space, argmax_pts, mass),
            bounding_region(surrogate.space, eps_pts, mass))
