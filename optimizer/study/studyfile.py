"""Study files: one TOML file per study family, parsed into frozen, validated records.

Every table rejects unknown keys, and every error is a ``ConfigError`` whose
``field`` is the dotted path of the offending key (``space.scaling_factor.low``)
and whose ``accepted`` says what would have been accepted.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimizer.science.space import ParamSpec
from optimizer.study.limits import (
    HEARTBEAT_RANGE,
    LEASE_RANGE,
    MAX_DISTRIBUTIONS,
    MAX_LIST_ITEMS,
    MAX_NAME_LEN,
    MAX_PARAMS,
    MAX_RETRIES,
    MAX_SEED,
    MAX_STARTUP_TRIALS,
    MAX_STRING_LEN,
    MAX_TIMEOUT_S,
    MAX_TRIALS,
    MAX_WORKERS,
    decode_toml,
    in_range,
)
from optimizer.study.storageurl import clip
from trainer.contract import TrialSpec
from trainer.errors import ConfigError
from trainer.helptext import meta

DISTRIBUTION_KINDS: tuple[str, ...] = ("iid", "dirichlet", "natural")
SAMPLER_KINDS: tuple[str, ...] = ("surrogate", "optuna-gp")
SURROGATE_KINDS: tuple[str, ...] = ("independent", "shared")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_ACCEPTED = (f"1-{MAX_NAME_LEN} letters, digits, '.', '_' or '-', starting with a letter "
                  "or digit (no '/', no spaces)")
STORAGE_SCHEMES: tuple[str, ...] = ("sqlite:///", "postgresql://", "postgresql+psycopg2://")
# Set per study by the distribution list and the seed policy, never by the profile.
_RESERVED_PROFILE_KEYS = frozenset({"distribution", "alpha"})
_SPEC_FIELDS = {f.name: f for f in dataclasses.fields(TrialSpec)}


@dataclass(frozen=True, kw_only=True)
class DistributionSpec:
    """One client-data distribution; each gets its own Optuna study."""

    kind: str = field(metadata=meta("iid, dirichlet or natural"))
    alpha: float | None = field(default=None, metadata=meta("Dirichlet concentration (> 0)"))

    @property
    def label(self) -> str:
        """Stable short name, used in study names: ``iid``, ``dirichlet-0.1``, ``natural``."""
        return f"dirichlet-{self.alpha:g}" if self.kind == "dirichlet" else self.kind

    def spec_fields(self) -> dict[str, Any]:
        """The TrialSpec fields this distribution fixes."""
        out: dict[str, Any] = {"distribution": self.kind}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        return out


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Where trials run and how failures are handled."""

    endpoints: tuple[str, ...] = field(default=(), metadata=meta("host:port of trainer services"))
    function: str = field(default="", metadata=meta("module:callable for --backend inprocess"))
    workers: int = field(default=1, metadata=meta("parallel trials for in-process/synthetic"))
    timeout_s: float = field(default=7200.0, metadata=meta("wall-clock limit of one trial"))
    max_retries: int = field(default=2, metadata=meta("retries of a failed trial (same params)"))
    heartbeat_s: float = field(default=10.0, metadata=meta("lease renewal interval"))
    lease_s: float = field(default=60.0, metadata=meta("a RUNNING trial whose lease is older "
                                                         "than this is failed and re-queued"))


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    """How trials are proposed."""

    n_startup_trials: int = field(default=6, metadata=meta("space-filling (QMC) trials before the GP"))
    # surrogate is the default by measurement, so proposals and answer share one model:
    # tests/benchmarks/bench_sampler.py --seeds 20 --budget 20 (same run for both), median
    # trials to within 0.03 of the optimum: surrogate 6.5 vs optuna-gp 7.5 (s* = 0.35,
    # p* = 0.75) and 6.0 vs 7.0 (--optimum 2.8,0.25); not reached 1/20 vs 2/20 and 3/20.
    kind: str = field(default="surrogate", metadata=meta(
        "surrogate (knowledge gradient on the answer's GP) or optuna-gp (Optuna's GPSampler)"))
    surrogate: str = field(default="independent", metadata=meta(
        "independent (one GP per distribution) or shared (one GP over (s, p, heterogeneity) "
        "fitted on every distribution's trials; needs kind = surrogate)"))

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ConfigError("sampler.kind", f"unknown sampler {self.kind!r}",
                              accepted=", ".join(SAMPLER_KINDS))
        if self.surrogate not in SURROGATE_KINDS:
            raise ConfigError("sampler.surrogate", f"unknown surrogate {self.surrogate!r}",
                              accepted=", ".join(SURROGATE_KINDS))
        if self.surrogate == "shared" and self.kind != "surrogate":
            raise ConfigError("sampler.surrogate", "shared proposes on the answer's own GP, "
                              f"which sampler.kind = {self.kind!r} does not use",
                              accepted='independent, or shared with kind = "surrogate"')


@dataclass(frozen=True, kw_only=True)
class StopConfig:
    """When a study ends before ``n_trials``: see optimizer.science.answer.stop_decision."""

    min_trials: int = field(default=10, metadata=meta("never stop with fewer complete trials"))
    epsilon: float = field(default=0.02, metadata=meta("pass@k regret considered negligible"))
    probability: float = field(default=0.9, metadata=meta("stop when P(regret <= epsilon) >= this"))
    enabled: bool = field(default=True, metadata=meta("false: always run n_trials"))


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """A whole study file."""

    name: str = field(metadata=meta("study name; Optuna studies are <name>/<distribution>"))
    distributions: tuple[DistributionSpec, ...] = field(metadata=meta("client-data splits"))
    space: tuple[ParamSpec, ...] = field(metadata=meta("searched parameters"))
    profile: Mapping[str, Any] = field(metadata=meta("fixed TrialSpec fields of every trial"))
    n_trials: int = field(default=20, metadata=meta("trial budget per distribution"))
    seed: int = field(default=0, metadata=meta("sampler seed and default trial seeds (CRN)"))
    storage: str = field(default="", metadata=meta("Optuna RDB URL; default sqlite:///runs/<name>.db"))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    initial_points: tuple[Mapping[str, Any], ...] = field(
        default=(), metadata=meta("explicit start-up points tried first (e.g. s = 0.5, 1, 2); "
                                   "the Sobol design fills up to sampler.n_startup_trials"))
    source: str = field(default="", metadata=meta("the file this came from"))

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///runs/{self.name}.db"

    def study_name(self, dist: DistributionSpec) -> str:
        return f"{self.name}/{dist.label}"

    def distribution(self, label: str) -> DistributionSpec:
        """The distribution with this label, or a ConfigError listing the labels."""
        for dist in self.distributions:
            if dist.label == label:
                return dist
        raise ConfigError("distribution", f"unknown distribution {label!r}",
                          accepted=", ".join(d.label for d in self.distributions))

    def base_params(self, dist: DistributionSpec) -> dict[str, Any]:
        """Fixed trial fields: the profile, the distribution, and common-random-number seeds.

        Every trial of a study shares seed, partition_seed and eval_seed (and the problem
        subset), so trials differ only by their searched parameters.
        """
        seeds = {"seed": self.seed, "partition_seed": self.seed, "eval_seed": self.seed}
        return {**seeds, **dict(self.profile), **dist.spec_fields()}


# ------------------------------------------------------------------ parsing ----


def load_study_file(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("study_file", f"no such file {str(p)!r}", accepted="a readable .toml file")
    return parse_study_text(p.read_bytes(), source=str(p), field="study_file")


def parse_study_text(text: str | bytes, *, source: str, field: str) -> StudyConfig:
    """Decode and validate a study file's text; errors about the text itself name ``field``.

    Bounded before anything is parsed (see ``optimizer.study.limits.decode_toml``).
    """
    return parse_study(decode_toml(text, field=field, source=source), source=source)


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(where, f"must be a table, got {type(table).__name__}", accepted="a table")
    for key in table:
        if key not in allowed:
            name = f"{where}.{clip(key, 80)}" if where else clip(key, 80)
            raise ConfigError(name, "unknown key", accepted=", ".join(sorted(allowed)))


def _typed(value: Any, kind: type | tuple[type, ...], where: str, accepted: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(where, f"must be {accepted}, got {value!r}", accepted=accepted)
    if not isinstance(value, kind):
        raise ConfigError(where, f"must be {accepted}, got {clip(repr(value))}", accepted=accepted)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(where, f"must be finite, got {value!r}", accepted=accepted)
    if isinstance(value, str) and len(value) > MAX_STRING_LEN:
        raise ConfigError(where, f"is {len(value)} characters long",
                          accepted=f"{accepted} of at most {MAX_STRING_LEN} characters")
    if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
        raise ConfigError(where, f"has {len(value)} items",
                          accepted=f"{accepted}, at most {MAX_LIST_ITEMS} items")
    return value


def _build(cls: type, table: Any, where: str) -> Any:
    """Construct a flat config dataclass from a table, type-checking each field by its default."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(table, set(fields), where)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        default = fields[key].default
        name = f"{where}.{key}"
        if isinstance(default, bool):
            kwargs[key] = _typed(value, bool, name, "true or false")
        elif isinstance(default, int):
            kwargs[key] = _typed(value, int, name, "an integer")
        elif isinstance(default, float):
            kwargs[key] = float(_typed(value, (int, float), name, "a number"))
        elif isinstance(default, tuple):
            items = _typed(value, list, name, "a list of strings")
            kwargs[key] = tuple(_typed(v, str, name, "a list of strings") for v in items)
        else:
            kwargs[key] = _typed(value, str, name, "a string")
    return cls(**kwargs)


def parse_distributions(items: Any) -> tuple[DistributionSpec, ...]:
    where = "distributions"
    if not isinstance(items, list) or not items or len(items) > MAX_DISTRIBUTIONS:
        raise ConfigError(where, f"must be a non-empty list of at most {MAX_DISTRIBUTIONS} tables",
                          accepted='e.g. [{kind="iid"}, {kind="dirichlet", alpha=0.1}]')
    out: list[DistributionSpec] = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        _check_keys(item, {"kind", "alpha"}, here)
        kind = item.get("kind")
        if kind not in DISTRIBUTION_KINDS:
            raise ConfigError(f"{here}.kind", f"unknown kind {clip(repr(kind))}",
                              accepted=", ".join(DISTRIBUTION_KINDS))
        alpha = item.get("alpha")
        if kind == "dirichlet":
            if alpha is None:
                raise ConfigError(f"{here}.alpha", "is required for dirichlet", accepted="(0, inf)")
            alpha = float(_typed(alpha, (int, float), f"{here}.alpha", "a number > 0"))
            in_range(alpha, f"{here}.alpha", 0.0, 1e6, low_open=True)
        elif alpha is not None:
            raise ConfigError(f"{here}.alpha", f"only applies to dirichlet, not {kind}",
                              accepted="omit it")
        out.append(DistributionSpec(kind=kind, alpha=alpha))
    labels = [d.label for d in out]
    for label in labels:
        if labels.count(label) > 1:
            raise ConfigError(where, f"distribution {label!r} is listed twice",
                              accepted="each distribution once")
    return tuple(out)


def parse_param(name: str, table: Any) -> ParamSpec:
    where = f"space.{name}"
    if name not in _SPEC_FIELDS or name in _RESERVED_PROFILE_KEYS:
        accepted = sorted(set(_SPEC_FIELDS) - _RESERVED_PROFILE_KEYS)
        raise ConfigError(where, "is not a searchable trial field", accepted=", ".join(accepted))
    _check_keys(table, {"low", "high", "log", "choices"}, where)
    if "choices" in table:
        if set(table) - {"choices"}:
            raise ConfigError(where, "a categorical takes only choices", accepted="choices = [...]")
        choices = _typed(table["choices"], list, f"{where}.choices", "a non-empty list")
        if not choices or len(set(map(str, choices))) != len(choices):
            raise ConfigError(f"{where}.choices", "must be non-empty and without repeats",
                              accepted="a list of distinct values")
        return ParamSpec(name=name, choices=tuple(choices))
    integer = _SPEC_FIELDS[name].type in ("int", int)
    if _SPEC_FIELDS[name].type not in ("int", "float", int, float):
        raise ConfigError(where, "a text field can only be searched as a categorical",
                          accepted="choices = [...]")
    bounds = {}
    for key in ("low", "high"):
        if key not in table:
            raise ConfigError(f"{where}.{key}", "is required", accepted="a number")
        kind = int if integer else (int, float)
        bounds[key] = _typed(table[key], kind, f"{where}.{key}",
                             "an integer" if integer else "a number")
    log = _typed(table.get("log", False), bool, f"{where}.log", "true or false")
    if bounds["low"] >= bounds["high"]:
        raise ConfigError(f"{where}.low", f"must be < high ({bounds['high']}), got {bounds['low']}",
                          accepted=f"(-inf, {bounds['high']})")
    if log and bounds["low"] <= 0:
        raise ConfigError(f"{where}.low", f"must be > 0 on a log scale, got {bounds['low']}",
                          accepted="(0, high)")
    return ParamSpec(name=name, low=bounds["low"], high=bounds["high"], log=log, integer=integer)


def parse_space(table: Any) -> tuple[ParamSpec, ...]:
    if not isinstance(table, Mapping) or not table or len(table) > MAX_PARAMS:
        raise ConfigError("space", f"must be a non-empty table of at most {MAX_PARAMS} parameters",
                          accepted="e.g. [space.scaling_factor] low=0.25 high=4.0 log=true")
    return tuple(parse_param(name, sub) for name, sub in table.items())


def _parse_profile(table: Any, space: tuple[ParamSpec, ...]) -> dict[str, Any]:
    _check_keys(table, set(_SPEC_FIELDS) - _RESERVED_PROFILE_KEYS, "profile")
    for param in space:
        if param.name in table:
            raise ConfigError(f"profile.{param.name}", "is also searched in [space]",
                              accepted="set it in one place only")
    return dict(table)


def _check_trial_specs(cfg: StudyConfig) -> None:
    """Build one TrialSpec per distribution at the space's corners to catch bad values now."""
    for dist in cfg.distributions:
        for corner in ("low", "high"):
            params = {p.name: (p.choices[0] if p.choices else getattr(p, corner))
                      for p in cfg.space}
            try:
                TrialSpec.from_dict(cfg.base_params(dist) | params)
            except ConfigError as exc:
                prefix = "space" if exc.field in params else "profile"
                msg = str(exc).split(": ", 1)[-1]
                raise ConfigError(f"{prefix}.{exc.field}", msg, accepted=exc.accepted) from exc


def _check_storage(url: str) -> None:
    if url and not url.startswith(STORAGE_SCHEMES):
        raise ConfigError("storage", f"unsupported URL {url!r}",
                          accepted="sqlite:///PATH or postgresql://USER@HOST/DB")


def parse_study(data: Mapping[str, Any], *, source: str = "") -> StudyConfig:
    """Validate a decoded study file. Raises ConfigError naming the first bad field."""
    top = {"name", "distributions", "space", "profile", "n_trials", "seed", "storage",
           "trainer", "sampler", "stop", "initial_points"}
    _check_keys(data, top, "")
    name = _typed(data.get("name", ""), str, "name", "a non-empty string")
    if len(name) > MAX_NAME_LEN or not _NAME_RE.fullmatch(name):
        raise ConfigError("name", f"invalid study name {clip(repr(name), 80)}",
                          accepted=_NAME_ACCEPTED)
    space = parse_space(data.get("space"))
    cfg = StudyConfig(
        name=name,
        distributions=parse_distributions(data.get("distributions")),
        space=space,
        profile=_parse_profile(data.get("profile", {}), space),
        n_trials=_typed(data.get("n_trials", 20), int, "n_trials", "an integer >= 1"),
        seed=_typed(data.get("seed", 0), int, "seed", "an integer"),
        storage=_typed(data.get("storage", ""), str, "storage", "a database URL"),
        trainer=_build(TrainerConfig, data.get("trainer", {}), "trainer"),
        sampler=_build(SamplerConfig, data.get("sampler", {}), "sampler"),
        stop=_build(StopConfig, data.get("stop", {}), "stop"),
        initial_points=parse_initial_points(data.get("initial_points", []), space),
        source=source,
    )
    _validate_numbers(cfg)
    _check_storage(cfg.storage)
    _check_trial_specs(cfg)
    return cfg


def parse_initial_points(items: Any, space: tuple[ParamSpec, ...]) -> tuple[dict[str, Any], ...]:
    """``[[initial_points]]`` tables: each names every searched parameter, inside its range."""
    items = _typed(items, list, "initial_points", "a list of tables")
    names = {p.name: p for p in space}
    out = []
    for i, table in enumerate(items):
        where = f"initial_points[{i}]"
        _typed(table, dict, where, "a table of parameter values")
        _check_keys(table, set(names), where)
        missing = sorted(set(names) - set(table))
        if missing:
            raise ConfigError(f"{where}.{missing[0]}", "is missing", accepted=", ".join(names))
        point: dict[str, Any] = {}
        for name, param in names.items():
            value = table[name]
            if param.choices is not None:
                if value not in param.choices:
                    raise ConfigError(f"{where}.{name}", f"{value!r} is not a choice",
                                      accepted=", ".join(map(str, param.choices)))
            else:
                value = _typed(value, (int, float), f"{where}.{name}", "a number")
                assert param.low is not None and param.high is not None
                if not param.low <= value <= param.high:
                    raise ConfigError(f"{where}.{name}", f"{value} is outside the space",
                                      accepted=f"[{param.low}, {param.high}]")
            point[name] = value
        out.append(point)
    return tuple(out)


def _validate_numbers(cfg: StudyConfig) -> None:
    """Every size and time within its bounds; lease_s > 2 x heartbeat_s."""
    in_range(cfg.n_trials, "n_trials", 1, MAX_TRIALS)
    in_range(cfg.seed, "seed", 0, MAX_SEED)
    t = cfg.trainer
    in_range(t.workers, "trainer.workers", 1, MAX_WORKERS)
    in_range(t.max_retries, "trainer.max_retries", 0, MAX_RETRIES)
    in_range(t.timeout_s, "trainer.timeout_s", 0.0, MAX_TIMEOUT_S, low_open=True)
    in_range(t.heartbeat_s, "trainer.heartbeat_s", *HEARTBEAT_RANGE)
    in_range(t.lease_s, "trainer.lease_s", *LEASE_RANGE)
    # A lease must outlive two missed heartbeats, or every healthy trial is reaped.
    if t.lease_s <= 2 * t.heartbeat_s:
        raise ConfigError("trainer.lease_s", f"must be > 2 x heartbeat_s ({2 * t.heartbeat_s:g}), "
                          f"got {t.lease_s:g}",
                          accepted=f"({2 * t.heartbeat_s:g}, {LEASE_RANGE[1]:g}]")
    if t.function and ":" not in t.function:
        raise ConfigError("trainer.function", f"{clip(repr(t.function))} has no ':'",
                          accepted="module.path:callable")
    startup = cfg.sampler.n_startup_trials
    low = max(1, len(cfg.initial_points))
    high = min(cfg.n_trials, MAX_STARTUP_TRIALS)
    if not low <= startup <= high:
        raise ConfigError("sampler.n_startup_trials",
                          f"must be >= 1 and >= the {len(cfg.initial_points)} initial_points, "
                          f"and <= n_trials ({cfg.n_trials}) and <= {MAX_STARTUP_TRIALS}; "
                          f"got {startup}",
                          accepted=f">= {low} and <= {high}" if low <= high else
                          f">= {low} with n_trials >= {low}")
    in_range(cfg.stop.epsilon, "stop.epsilon", 0.0, 1.0, low_open=True)
    if not 0 < cfg.stop.probability < 1:
        raise ConfigError("stop.probability", f"must be in (0, 1), got {cfg.stop.probability}",
                          accepted="(0, 1)")
    in_range(cfg.stop.min_trials, "stop.min_trials", 1, MAX_TRIALS)
