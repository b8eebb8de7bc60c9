"""Server aggregation: pure functions on ``dict[str, torch.Tensor]`` states.

The rule (SPEC, "Scaling factor"):

    theta_{t+1} = theta_t + s * sum_k w_k (theta_k - theta_t),   w_k = n_k / sum_j n_j

Sums run in float64 and are cast back to each tensor's dtype once, so the
result does not depend on float32 rounding of intermediate deltas. At
``s == 1`` the result is the weighted mean of the client states itself
(FedAvg), which the rule equals algebraically because the weights sum to one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

State = Mapping[str, "torch.Tensor"]


def normalised_weights(counts: Sequence[int | float]) -> list[float]:
    """Example counts -> weights summing to one."""
    if not counts:
        raise ValueError("no clients to aggregate")
    if any(c < 0 for c in counts):
        raise ValueError(f"negative example count in {list(counts)}")
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("client example counts sum to zero")
    return [float(c) / total for c in counts]


def _check_keys(global_state: State, client_states: Sequence[State]) -> None:
    keys = set(global_state)
    for i, state in enumerate(client_states):
        if set(state) != keys:
            missing = sorted(keys ^ set(state))[:3]
            raise KeyError(f"client {i} state keys differ from the global state: {missing}")


def weighted_mean(states: Sequence[State], counts: Sequence[int | float]) -> dict[str, torch.Tensor]:
    """Example-count-weighted mean of client states (float64 accumulation)."""
    import torch

    weights = normalised_weights(counts)
    if len(weights) != len(states):
        raise ValueError(f"{len(states)} states but {len(weights)} counts")
    out: dict[str, torch.Tensor] = {}
    for name, ref in states[0].items():
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for w, state in zip(weights, states):
            acc += w * state[name].detach().to(torch.float64)
        out[name] = acc
    return out


def server_update(global_state: State, client_states: Sequence[State],
                  counts: Sequence[int | float], *, scaling_factor: float,
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Apply one round: return ``(new_state, update)`` where ``update = new - old``
    is ``s * sum_k w_k (theta_k - theta)`` (each in the global tensors' dtypes)."""
    _check_keys(global_state, client_states)
    mean = weighted_mean(client_states, counts)
    new: dict[str, torch.Tensor] = {}
    update: dict[str, torch.Tensor] = {}
    for name, theta in global_state.items():
        old = theta.detach().to(mean[name].dtype)
        if scaling_factor == 1.0:
            merged = mean[name]  # FedAvg exactly: no round trip through a delta
        else:
            merged = old + scaling_factor * (mean[name] - old)
        new[name] = merged.to(theta.dtype)
        update[name] = (merged - old).to(theta.dtype)
    return new, update


def update_norm(update: State) -> float:
    """Global L2 norm over every tensor of an update."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    for tensor in update.values():
        total += tensor.detach().to(torch.float64).pow(2).sum().cpu()
    return float(total.sqrt())


def deltas(global_state: State, client_states: Sequence[State]) -> list[dict[str, torch.Tensor]]:
    """Per-client updates ``theta_k - theta`` (for diagnostics; aggregation needs none)."""
    _check_keys(global_state, client_states)
    return [{n: state[n].detach() - global_state[n].detach() for n in global_state}
            for state in client_states]
