"""scalefed optimizer: Optuna studies over (scaling factor, participation rate)."""

from __future__ import annotations
