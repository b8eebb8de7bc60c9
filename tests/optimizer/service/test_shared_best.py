"""GetBest over real gRPC for a distribution the study never ran: the shared surrogate's
prediction at the heterogeneity of its split, marked as such, with its 90% region."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer.service import convert
from optimizer.service.client import OptimizerClient
from optimizer.service.policy import OperatorPolicy
from optimizer.service.server import OptimizerServerConfig, create_server
from optimizer.study.backends import SyntheticBackend
from optimizer.study.heterogeneity import synthetic_heterogeneity
from optimizer.study.manager import StudyManager, distribution_status, run_study
from optimizer.study.shared import parse_label
from tests.optimizer.conftest import small_study
from trainer.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


def test_get_best_answers_for_a_label_never_run(tmp_path: Path) -> None:
    cfg = small_study(storage=f"sqlite:///{tmp_path / 'fam.db'}", n_trials=4, startup=4,
                      distributions=[{"kind": "iid"}, {"kind": "dirichlet", "alpha": 0.1}])
    run_study(cfg, [SyntheticBackend()], resume=False)
    manager = StudyManager(backend_factory=lambda c: [SyntheticBackend()])
    policy = OperatorPolicy(storage_root=tmp_path)
    server = create_server(OptimizerServerConfig(port=0, backend="synthetic", policy=policy),
                           manager=manager, studies=[cfg])
    with server, OptimizerClient(server.address) as client:
        unseen = client.get_best(cfg.name, "dirichlet-0.5")
        studied = client.get_best(cfg.name, "iid")
        with pytest.raises(ConfigError, match="or a label never run"):
            client.get_best(cfg.name, "dirichlet-x")
    expected_h = synthetic_heterogeneity(cfg.base_params(parse_label("dirichlet-0.5")))
    assert unseen.is_prediction and not unseen.exists
    assert unseen.heterogeneity == pytest.approx(expected_h)
    assert unseen.trials_used == 0 and not unseen.HasField("observed_best")
    assert unseen.HasField("scaling_factor") and unseen.HasField("participation")
    assert unseen.argmax_region.n_points > 0
    assert set(unseen.argmax_region.ranges) == {"scaling_factor", "participation"}
    local = distribution_status(cfg, "dirichlet-0.5")
    assert convert.answer_from_proto(unseen) == local.answer
    assert not studied.is_prediction and studied.exists and studied.trials_used == 4
    assert studied.HasField("heterogeneity") and studied.heterogeneity < unseen.heterogeneity
