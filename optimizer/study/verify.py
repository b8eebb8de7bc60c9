"""Running the replicate experiments: verification of an answer, calibration of a profile.

Replicates are not Optuna trials (they would feed the surrogate seeds it cannot
see); they run on the same backends and their results live in the study's own
user attributes (``scalefed:verification``), written after every replicate, so
a verification interrupted by Ctrl-C or a crash continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from optimizer.science.verification import Calibration, Lift, calibration, paired_lift
from optimizer.study import storage as store
from optimizer.study.backends import TrialBackend
from optimizer.study.studyfile import DistributionSpec, StudyConfig
from trainer.errors import ConfigError

log = logging.getLogger(__name__)
VERIFY_ATTR = "scalefed:verification"
CALIBRATE_ATTR = "scalefed:calibration"
# Replicate seeds start far from the study's own seed so no replicate repeats a trial.
_SEED_OFFSET = 100_003
Progress = Callable[[str], None]


def replicate_params(cfg: StudyConfig, dist: DistributionSpec, params: Mapping[str, Any],
                     index: int) -> dict[str, Any]:
    """Trial parameters of replicate ``index``: a fresh (training, evaluation) seed pair;
    the data partition stays the study's."""
    seed = cfg.seed + _SEED_OFFSET * (index + 1)
    return {**cfg.base_params(dist), **params, "seed": seed, "eval_seed": seed + 1}


def stored_lift(attrs: Mapping[str, Any]) -> Lift | None:
    """The verification stored in a study's user attributes (None if fewer than 2 pairs)."""
    state = attrs.get(VERIFY_ATTR)
    if not state or len(state.get("optimum_values", ())) < 2:
        return None
    return paired_lift(state["optimum"], state["baseline"], state["optimum_values"],
                       state["baseline_values"])


def verify(cfg: StudyConfig, dist: DistributionSpec, backend: TrialBackend, *,
           replicates: int, progress: Progress | None = None) -> Lift:
    """Re-run the predicted optimum and FedAvg (s = 1 at the same p) ``replicates`` times."""
    if replicates < 2:
        raise ConfigError("replicates", f"must be >= 2, got {replicates}", accepted=">= 2")
    storage = store.open_storage(cfg.storage_url)
    study = store.create_or_load(cfg, dist, storage, must_exist=True)
    from optimizer.study.shared import distribution_answer

    # The answer `study best` shows: the shared (s, p, h) surface in shared mode, else its own GP.
    answer, _ = distribution_answer(cfg, storage, dist, study.get_trials(deepcopy=False),
                                    regions=False)
    if answer.predicted is None:
        raise ConfigError("n_trials", f"{study.study_name} has {answer.n_complete} complete "
                          "trials; verification needs the surrogate's optimum",
                          accepted=">= 3 complete trials")
    searched = {p.name for p in cfg.space}  # the shared surface adds h, which no trial takes
    optimum = {k: v for k, v in answer.predicted.params.items() if k in searched}
    baseline = {**optimum, "scaling_factor": 1.0}
    state = study.user_attrs.get(VERIFY_ATTR) or {}
    if state.get("optimum") != optimum or state.get("baseline") != baseline:
        state = {"optimum": optimum, "baseline": baseline, "optimum_values": [],
                 "baseline_values": []}  # a new answer: its earlier verification is moot
    for i in range(len(state["optimum_values"]), replicates):
        first = backend.run(replicate_params(cfg, dist, optimum, i)).pass_at_k
        # When the optimum is FedAvg itself, both arms are one run (same seeds, same params).
        pair = [first, first if baseline == optimum else
                backend.run(replicate_params(cfg, dist, baseline, i)).pass_at_k]
        state["optimum_values"].append(pair[0])
        state["baseline_values"].append(pair[1])
        study.set_user_attr(VERIFY_ATTR, state)
        if progress is not None:
            progress(f"{dist.label}: replicate {i + 1}/{replicates}: optimum {pair[0]:.3f}, "
                     f"FedAvg {pair[1]:.3f}")
    lift = stored_lift(study.user_attrs)
    assert lift is not None
    return lift


def calibrate(cfg: StudyConfig, dist: DistributionSpec, backend: TrialBackend, *,
              replicates: int, progress: Progress | None = None) -> Calibration:
    """Replicates of FedAvg (s = 1) at the centre participation under fresh seed pairs,
    then the centre and the corners of the space at the study's own seeds: the noise,
    and the effects it must resolve."""
    if replicates < 2:
        raise ConfigError("replicates", f"must be >= 2, got {replicates}", accepted=">= 2")
    study = store.create_or_load(cfg, dist, store.open_storage(cfg.storage_url),
                                 must_exist=False)
    centre = _centre(cfg)
    points = [centre, *_corners(cfg, centre)]
    state = stored_calibration_state(study.user_attrs, points)
    # Every run is stored as it ends, so a crash or Ctrl-C loses at most the running one.
    for i in range(len(state["replicate_values"]), replicates):
        value = backend.run(replicate_params(cfg, dist, centre, i)).pass_at_k
        state["replicate_values"].append(value)
        study.set_user_attr(CALIBRATE_ATTR, state)
        if progress is not None:
            progress(f"{dist.label}: replicate {i + 1}/{replicates} at s=1: {value:.3f}")
    for point in points[len(state["spread_values"]):]:
        value = backend.run({**cfg.base_params(dist), **point}).pass_at_k
        state["spread_values"].append(value)
        study.set_user_attr(CALIBRATE_ATTR, state)
        if progress is not None:
            progress(f"{dist.label}: spread point {point}: {value:.3f}")
    return calibration(state["replicate_values"], list(zip(points, state["spread_values"])),
                       epsilon=cfg.stop.epsilon)


def stored_calibration_state(attrs: Mapping[str, Any],
                             points: list[dict[str, Any]]) -> dict[str, Any]:
    """The calibration runs stored in a study, or a fresh record when the space changed
    (runs at other points say nothing about this profile's spread)."""
    state = attrs.get(CALIBRATE_ATTR) or {}
    if state.get("points") != json.loads(json.dumps(points)):
        return {"points": points, "replicate_values": [], "spread_values": []}
    return {"points": points, "replicate_values": list(state["replicate_values"]),
            "spread_values": list(state["spread_values"])}


def _centre(cfg: StudyConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in cfg.space:
        if p.choices is not None:
            out[p.name] = p.choices[0]
        elif p.name == "scaling_factor":
            out[p.name] = 1.0
        else:
            assert p.low is not None and p.high is not None
            mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
            out[p.name] = round(mid) if p.integer else mid
    return out


def _corners(cfg: StudyConfig, centre: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each range axis at its low and high end, the others at the centre."""
    points = []
    for p in cfg.space:
        if p.choices is None:
            points += [{**centre, p.name: p.low}, {**centre, p.name: p.high}]
    return points
