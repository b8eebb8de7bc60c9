"""scalefed trainer: model loading, HumanEval evaluation, federated LoRA training, gRPC service."""

from __future__ import annotations

__version__ = "0.1.0"
