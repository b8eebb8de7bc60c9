"""Conversion between the scalefed.v1 OptimizerService messages and the optimizer's domain types.

Mechanical: study sources and overrides in, ``StudyStatus`` / ``DistributionStatus`` /
``Answer`` / Optuna trials out (and the answer back, for clients). No science here.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.message import Message
from optuna.trial import FrozenTrial

from optimizer.science.answer import Answer, Observation, Prediction, Region
from optimizer.science.verification import Lift
from optimizer.service.api import optimizer_pb2 as pb
from optimizer.service.policy import OperatorPolicy
from optimizer.study.limits import MAX_NAME_LEN, MAX_TRIALS
from optimizer.study.manager import DistributionStatus, StudyStatus
from optimizer.study.storageurl import clip, redact
from optimizer.study.studyfile import STORAGE_SCHEMES, StudyConfig, parse_study_text
from trainer.errors import ConfigError

TOML_SOURCE = "<study_toml>"
_SOURCE_ACCEPTED = "study_file (a TOML path on the server) or study_toml (the file's text)"
_STUDY_ACCEPTED = "the name of a study this server knows (see ListStudies)"


# ---------------------------------------------------------------- requests ----


def study_config(request: pb.StartStudyRequest | pb.ResumeStudyRequest,
                 policy: OperatorPolicy) -> StudyConfig:
    """The validated study a Start/Resume request names by file or text, with its overrides.

    A study_file is read only from the policy's study directories. (A ResumeStudy by
    ``study`` name is resolved by the servicer, which knows the names.)
    """
    kind = request.WhichOneof("source")
    if kind == "study_file":
        cfg = policy.read_study_file(request.study_file)
    elif kind == "study_toml":
        cfg = parse_study_text(request.study_toml, source=TOML_SOURCE, field="study_toml")
    else:
        raise ConfigError("study_file", "a study source is required", accepted=_SOURCE_ACCEPTED)
    return apply_overrides(cfg, request.overrides, policy)


def apply_overrides(cfg: StudyConfig, overrides: pb.StudyOverrides,
                    policy: OperatorPolicy) -> StudyConfig:
    """``cfg`` with the request's storage / n_trials overrides, validated like the file's
    and, for the storage, against the operator's policy."""
    changes: dict[str, Any] = {}
    if overrides.HasField("storage"):
        if not overrides.storage.startswith(STORAGE_SCHEMES):
            raise ConfigError("overrides.storage", f"unsupported URL {clip(overrides.storage)!r}",
                              accepted="sqlite:///PATH or postgresql://USER@HOST/DB")
        changes["storage"] = policy.storage_url(overrides.storage, cfg.name,
                                                field="overrides.storage")
    if overrides.HasField("n_trials"):
        if not 1 <= overrides.n_trials <= MAX_TRIALS:
            raise ConfigError("overrides.n_trials", f"must be >= 1 and <= {MAX_TRIALS}, got "
                              f"{overrides.n_trials}", accepted=f">= 1 and <= {MAX_TRIALS}")
        changes["n_trials"] = overrides.n_trials
    return dataclasses.replace(cfg, **changes) if changes else cfg


def required(value: str, field: str, accepted: str) -> str:
    """``value`` if set, else a ConfigError naming ``field``."""
    if not value:
        raise ConfigError(field, "is required", accepted=accepted)
    return value


def bounded(value: str, field: str, limit: int) -> str:
    """``value`` if at most ``limit`` characters, else a ConfigError naming ``field``."""
    if len(value) > limit:
        raise ConfigError(field, f"is {len(value)} characters long",
                          accepted=f"at most {limit} characters")
    return value


def study_name(value: str) -> str:
    """A request's ``study`` field: required, and no longer than a study name can be."""
    return bounded(required(value, "study", _STUDY_ACCEPTED), "study", MAX_NAME_LEN)


# ------------------------------------------------------------------ params ----


def param_to_proto(value: Any) -> pb.ParamValue:
    """One parameter value; bool before int (bool is an int in Python)."""
    if isinstance(value, bool):
        return pb.ParamValue(flag=value)
    if isinstance(value, numbers.Integral):
        return pb.ParamValue(integer=int(value))
    if isinstance(value, numbers.Real):
        return pb.ParamValue(number=float(value))
    return pb.ParamValue(text=str(value))


def param_from_proto(msg: pb.ParamValue) -> Any:
    kind = msg.WhichOneof("kind")
    return getattr(msg, kind) if kind else None


def fill_params(target: Any, params: Mapping[str, Any]) -> None:
    """Copy ``params`` into a proto ``map<string, ParamValue>`` field."""
    for name, value in params.items():
        target[name].CopyFrom(param_to_proto(value))


def params_from_proto(source: Any) -> dict[str, Any]:
    return {name: param_from_proto(value) for name, value in source.items()}


# ------------------------------------------------------------------ studies ----


def study_state(status: StudyStatus, error: BaseException | None) -> pb.Study.State:
    """RUNNING / FAILED (last run raised) / COMPLETED (every budget used or stop rule met) / IDLE."""
    if status.running:
        return pb.Study.RUNNING
    if error is not None:
        return pb.Study.FAILED
    done = all(d.exists and (d.stopped or d.states.get("COMPLETE", 0) >= d.n_trials)
               for d in status.distributions)
    return pb.Study.COMPLETED if done else pb.Study.IDLE


def trial_to_proto(trial: FrozenTrial) -> pb.Trial:
    msg = pb.Trial(number=trial.number, state=trial.state.name,
                   intermediate={int(k): float(v) for k, v in trial.intermediate_values.items()},
                   fail_reason=str(trial.user_attrs.get("fail_reason", "")))
    fill_params(msg.params, trial.params)
    if trial.value is not None:
        msg.value = float(trial.value)
    if "stderr" in trial.user_attrs:
        msg.stderr = float(trial.user_attrs["stderr"])
    return msg


def distribution_to_proto(dist: DistributionStatus,
                          trials: Sequence[FrozenTrial] = ()) -> pb.DistributionProgress:
    return pb.DistributionProgress(
        label=dist.label, study_name=dist.study_name, exists=dist.exists, n_trials=dist.n_trials,
        complete=dist.states.get("COMPLETE", 0), states=dict(dist.states),
        stopped=dist.stopped or "", trials=[trial_to_proto(t) for t in trials])


def study_to_proto(status: StudyStatus, *, error: BaseException | None = None,
                   trials: Mapping[str, Sequence[FrozenTrial]] | None = None) -> pb.Study:
    """A Study message; ``trials`` maps distribution labels to their stored trials."""
    trials = trials or {}
    return pb.Study(
        name=status.name, storage=redact(status.storage), state=study_state(status, error),
        running=status.running, error="" if error is None else f"{type(error).__name__}: {error}",
        distributions=[distribution_to_proto(d, trials.get(d.label, ()))
                       for d in status.distributions])


# ------------------------------------------------------------------- answer ----


def best_to_proto(study: str, dist: DistributionStatus) -> pb.BestAnswer:
    """The GetBest reply for one distribution's status (its ``answer`` may be None)."""
    msg = pb.BestAnswer(study=study, distribution=dist.label, study_name=dist.study_name,
                        exists=dist.exists, stopped=dist.stopped or "",
                        is_prediction=dist.predicted)
    if dist.heterogeneity is not None:
        msg.heterogeneity = dist.heterogeneity
    if dist.verification is not None:
        msg.verification.CopyFrom(lift_to_proto(dist.verification))
    ans = dist.answer
    if ans is None:
        return msg
    msg.trials_used = ans.n_complete
    if ans.noise_sd is not None:
        msg.noise_sd = ans.noise_sd
    if ans.predicted is not None:
        pred = ans.predicted
        msg.predicted.CopyFrom(pb.Prediction(mean=pred.mean, sd=pred.sd, lower=pred.lower,
                                             upper=pred.upper, level_lower=pred.level_lower,
                                             level_upper=pred.level_upper))
        fill_params(msg.predicted.params, pred.params)
        for name in ("scaling_factor", "participation"):
            if isinstance(pred.params.get(name), numbers.Real):
                setattr(msg, name, float(pred.params[name]))
    for field_name, region in (("argmax_region", ans.argmax_region),
                               ("epsilon_region", ans.epsilon_region)):
        if region is not None:
            getattr(msg, field_name).CopyFrom(region_to_proto(region))
    if ans.observed_best is not None:
        obs = ans.observed_best
        msg.observed_best.CopyFrom(pb.ObservedBest(number=obs.number, value=obs.value,
                                                   stderr=obs.stderr))
        fill_params(msg.observed_best.params, obs.params)
    return msg


def region_to_proto(region: Region) -> pb.Region:
    msg = pb.Region(mass=region.mass, n_points=region.n_points, description=region.describe())
    for name, bounds in region.bounds.items():
        if len(bounds) == 2 and all(isinstance(b, float) for b in bounds):
            msg.ranges[name].CopyFrom(pb.Interval(low=bounds[0], high=bounds[1]))
        else:
            msg.choices[name].values.extend(param_to_proto(v) for v in bounds)
    return msg


def region_from_proto(msg: pb.Region) -> Region:
    bounds: dict[str, tuple[Any, ...]] = {k: (v.low, v.high) for k, v in msg.ranges.items()}
    bounds.update({k: tuple(param_from_proto(x) for x in v.values)
                   for k, v in msg.choices.items()})
    return Region(mass=msg.mass, bounds=bounds, n_points=msg.n_points)


def lift_to_proto(lift: Lift) -> pb.Verification:
    msg = pb.Verification(replicates=lift.replicates, lift=lift.mean, lift_lower=lift.lower,
                          lift_upper=lift.upper, optimum_values=list(lift.optimum_values),
                          baseline_values=list(lift.baseline_values))
    fill_params(msg.optimum, lift.optimum)
    fill_params(msg.baseline, lift.baseline)
    return msg


def lift_from_proto(msg: pb.Verification) -> Lift:
    return Lift(optimum=params_from_proto(msg.optimum), baseline=params_from_proto(msg.baseline),
                optimum_values=tuple(msg.optimum_values),
                baseline_values=tuple(msg.baseline_values), mean=msg.lift,
                lower=msg.lift_lower, upper=msg.lift_upper)


def answer_from_proto(msg: pb.BestAnswer) -> Answer:
    """The domain Answer inside a GetBest reply (without the stop decision; the
    verification is ``lift_from_proto(msg.verification)``)."""
    predicted = observed = None
    if _has(msg, "predicted"):
        p = msg.predicted
        predicted = Prediction(
            params=params_from_proto(p.params), mean=p.mean, sd=p.sd, lower=p.lower,
            upper=p.upper, level_lower=p.level_lower if p.HasField("level_lower") else None,
            level_upper=p.level_upper if p.HasField("level_upper") else None)
    if _has(msg, "observed_best"):
        o = msg.observed_best
        observed = Observation(number=o.number, params=params_from_proto(o.params), value=o.value,
                               stderr=o.stderr)
    regions = [region_from_proto(getattr(msg, name)) if _has(msg, name) else None
               for name in ("argmax_region", "epsilon_region")]
    return Answer(n_complete=msg.trials_used, observed_best=observed, predicted=predicted,
                  argmax_region=regions[0], epsilon_region=regions[1],
                  noise_sd=msg.noise_sd if msg.HasField("noise_sd") else None)


def _has(msg: Message, name: str) -> bool:
    return bool(msg.HasField(name))
