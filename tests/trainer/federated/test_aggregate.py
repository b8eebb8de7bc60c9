"""Server aggregation against brute force: FedAvg at s=1, exact scaling at s != 1."""

from __future__ import annotations

import pytest
import torch

from trainer.federated.aggregate import (
    deltas,
    normalised_weights,
    server_update,
    update_norm,
    weighted_mean,
)

COUNTS = [30, 10, 60]


def _states(seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"a.lora_A": (4, 8), "a.lora_B": (8, 4), "b": (3,)}
    glob = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    clients = [{k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in glob.items()}
               for _ in COUNTS]
    return glob, clients


def _brute_mean(clients: list[dict[str, torch.Tensor]], name: str) -> torch.Tensor:
    total = float(sum(COUNTS))
    acc = torch.zeros(clients[0][name].shape, dtype=torch.float64)
    for n, state in zip(COUNTS, clients):
        acc += (n / total) * state[name].double()
    return acc


def test_s1_is_weighted_mean_exactly() -> None:
    glob, clients = _states()
    new, update = server_update(glob, clients, COUNTS, scaling_factor=1.0)
    for name in glob:
        expected = _brute_mean(clients, name).float()
        assert torch.equal(new[name], expected)
        assert new[name].dtype == torch.float32
    assert update_norm(update) > 0


@pytest.mark.parametrize("s", [0.5, 2.0, 0.1])
def test_scaling_factor_scales_update_exactly(s: float) -> None:
    glob, clients = _states(1)
    new, update = server_update(glob, clients, COUNTS, scaling_factor=s)
    _, fed_update = server_update(glob, clients, COUNTS, scaling_factor=1.0)
    for name, theta in glob.items():
        d = deltas(glob, clients)
        brute = theta.double() + s * sum((n / sum(COUNTS)) * dk[name].double()
                                         for n, dk in zip(COUNTS, d))
        torch.testing.assert_close(new[name], brute.float(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(update[name], s * fed_update[name], rtol=1e-5, atol=1e-7)
    assert update_norm(update) == pytest.approx(s * update_norm(fed_update), rel=1e-5)


def test_weights_and_norm() -> None:
    assert normalised_weights([1, 3]) == [0.25, 0.75]
    with pytest.raises(ValueError):
        normalised_weights([0, 0])
    assert update_norm({"x": torch.tensor([3.0]), "y": torch.tensor([[4.0]])}) == 5.0
    one = {"x": torch.tensor([2.0])}
    assert torch.equal(weighted_mean([one], [5])["x"], torch.tensor([2.0], dtype=torch.float64))


def test_mismatched_keys_are_rejected() -> None:
    glob, clients = _states()
    clients[1] = {k: v for k, v in clients[1].items() if k != "b"}
    with pytest.raises(KeyError, match="client 1"):
        server_update(glob, clients, COUNTS, scaling_factor=1.0)
