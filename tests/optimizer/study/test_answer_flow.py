"""The answer's life cycle on the synthetic trainer: the stop rule ends a study early,
verification measures the lift over FedAvg and survives a resume, calibration says
whether a profile can resolve anything, and GetBest carries all of it over gRPC."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optimizer.science.synthetic import Landscape
from optimizer.service import convert
from optimizer.service.client import OptimizerClient
from optimizer.service.policy import OperatorPolicy
from optimizer.service.server import OptimizerServerConfig, create_server
from optimizer.study.backends import BackendResult, RoundCallback, SyntheticBackend
from optimizer.study.manager import StudyManager, distribution_status, run_study
from optimizer.study.verify import calibrate, verify
from tests.optimizer.conftest import small_study


class CountingBackend(SyntheticBackend):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Mapping[str, Any]] = []

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        self.calls.append(dict(params))
        return super().run(params, on_round=on_round, cancel=cancel)


def _study(tmp_path: Path, *, n_trials: int, stop: bool = True):  # type: ignore[no-untyped-def]
    return small_study(storage=f"sqlite:///{tmp_path / 'a.db'}", n_trials=n_trials, stop=stop,
                       startup=5, problems="164")


def test_the_stop_rule_ends_a_study_before_its_budget(tmp_path: Path) -> None:
    cfg = _study(tmp_path, n_trials=40)
    backend = SyntheticBackend(landscapes={"iid": Landscape(optimum_s=2.0, optimum_p=0.3)})
    [outcome] = run_study(cfg, [backend], resume=False)
    assert outcome.ended == "stop rule"
    assert cfg.stop.min_trials <= outcome.n_complete < 40
    status = distribution_status(cfg, "iid")
    assert status.stopped and status.answer is not None and status.answer.argmax_region


def test_verify_stores_a_paired_lift_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    cfg = _study(tmp_path, n_trials=8, stop=False)
    land = {"iid": Landscape(optimum_s=3.0, optimum_p=0.3)}
    run_study(cfg, [SyntheticBackend(landscapes=land)], resume=False)
    dist = cfg.distributions[0]
    backend = CountingBackend(landscapes=land)
    lift = verify(cfg, dist, backend, replicates=2)
    assert len(backend.calls) == 4 and lift.replicates == 2
    optimum, baseline = backend.calls[0], backend.calls[1]
    assert baseline["scaling_factor"] == 1.0
    assert baseline["participation"] == optimum["participation"]
    # Both arms of a replicate share a fresh seed pair, unlike the study's trials.
    assert optimum["seed"] == baseline["seed"] != cfg.seed
    assert backend.calls[2]["seed"] not in (optimum["seed"], cfg.seed)
    assert lift.lower <= lift.mean <= lift.upper
    assert lift.mean > 0  # s* = 3 is far from FedAvg on this landscape
    # A later, larger verification reuses the stored pairs: only the new one runs.
    more = verify(cfg, dist, backend, replicates=3)
    assert len(backend.calls) == 6 and more.replicates == 3
    assert more.optimum_values[:2] == lift.optimum_values
    shown = distribution_status(cfg, "iid").verification
    assert shown is not None and shown.replicates == 3 and shown.mean == more.mean


def test_calibration_reports_noise_effects_and_an_honest_verdict(tmp_path: Path) -> None:
    cfg = _study(tmp_path, n_trials=8)
    dist = cfg.distributions[0]
    peaked = calibrate(cfg, dist, SyntheticBackend(landscapes={
        "iid": Landscape(optimum_s=1.0, optimum_p=0.55, lift=3.0)}), replicates=4)
    (tmp_path / "flat").mkdir()  # its own storage: a study keeps the calibration it ran
    flat_cfg = _study(tmp_path / "flat", n_trials=8)
    flat = calibrate(flat_cfg, flat_cfg.distributions[0], SyntheticBackend(landscapes={
        "iid": Landscape(optimum_s=1.0, optimum_p=0.55, lift=0.0)}), replicates=4)
    assert peaked.noise_sd > 0 and len(peaked.spread) == 5  # the centre and 4 corners
    assert peaked.snr > 3 > flat.snr
    assert "cannot separate" in flat.verdict() and "cannot" not in peaked.verdict()


def test_get_best_carries_regions_noise_and_verification_over_grpc(tmp_path: Path) -> None:
    cfg = _study(tmp_path, n_trials=6, stop=False)
    land = {"iid": Landscape(optimum_s=2.5, optimum_p=0.3)}
    run_study(cfg, [SyntheticBackend(landscapes=land)], resume=False)
    verify(cfg, cfg.distributions[0], SyntheticBackend(landscapes=land), replicates=2)
    manager = StudyManager(backend_factory=lambda c: [SyntheticBackend(landscapes=land)])
    policy = OperatorPolicy(storage_root=tmp_path)  # the operator allows this study's storage
    server = create_server(OptimizerServerConfig(port=0, backend="synthetic", policy=policy),
                           manager=manager, studies=[cfg])
    with server, OptimizerClient(server.address) as client:
        reply = client.get_best(cfg.name, "iid")
    local = distribution_status(cfg, "iid")
    assert local.answer is not None and local.verification is not None
    assert convert.answer_from_proto(reply) == local.answer
    assert convert.lift_from_proto(reply.verification) == local.verification
    assert reply.argmax_region.description == local.answer.argmax_region.describe()  # type: ignore[union-attr]
    assert reply.HasField("noise_sd") and reply.predicted.HasField("level_lower")


class FailingAfter(CountingBackend):
    """A backend that crashes on its ``limit + 1``-th run, like a worker killed mid-calibration."""

    def __init__(self, *, limit: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def run(self, params: Mapping[str, Any], *, on_round: RoundCallback | None = None,
            cancel: threading.Event | None = None) -> BackendResult:
        if len(self.calls) >= self.limit:
            raise RuntimeError("worker died")
        return super().run(params, on_round=on_round, cancel=cancel)


def test_calibration_is_stored_run_by_run_and_resumes_without_repeats(tmp_path: Path) -> None:
    cfg = _study(tmp_path, n_trials=8)
    dist = cfg.distributions[0]
    land = {"iid": Landscape(optimum_s=1.0, optimum_p=0.55, lift=3.0)}
    crashing = FailingAfter(limit=5, landscapes=land)
    try:
        calibrate(cfg, dist, crashing, replicates=3)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the backend should have crashed")
    again = CountingBackend(landscapes=land)
    resumed = calibrate(cfg, dist, again, replicates=3)
    (tmp_path / "fresh").mkdir()
    fresh_cfg = _study(tmp_path / "fresh", n_trials=8)
    uninterrupted = CountingBackend(landscapes=land)
    whole = calibrate(fresh_cfg, fresh_cfg.distributions[0], uninterrupted, replicates=3)
    # 3 replicates + 5 spread points in all; the crash cut off 3, which alone ran again
    assert len(crashing.calls) == 5 and len(again.calls) == 3
    assert crashing.calls + again.calls == uninterrupted.calls
    assert resumed == whole
    assert calibrate(cfg, dist, again, replicates=3) == whole and len(again.calls) == 3


def test_snr_lower_bound_widens_with_few_replicates() -> None:
    from optimizer.science.verification import calibration

    spread = [({"scaling_factor": 0.25}, 0.10), ({"scaling_factor": 4.0}, 0.20)]
    few = calibration([0.30, 0.32, 0.34], spread, epsilon=0.02)
    many = calibration([0.30, 0.32, 0.34] * 4, spread, epsilon=0.02)
    assert few.noise_sd_upper > few.noise_sd and few.snr_lower < few.snr
    assert many.snr_lower > few.snr_lower  # more replicates, tighter guarantee
    assert few.snr > 3 > few.snr_lower and "more replicates" in few.verdict()
