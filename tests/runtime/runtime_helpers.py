"""Tiny CPU models and data for the runtime tests (imported by the test modules)."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn


def here() -> int:
    """The caller's line number: `line = here() + 1` names the next line of a test."""
    return sys._getframe(1).f_lineno


def tiny_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def batches(n: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(6, 8, generator=generator), torch.randn(6, 4, generator=generator))
        for _ in range(n)
    ]


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x).float(), y)


def codes(findings: list) -> list[str]:
    return [finding.code for finding in findings]


def clamp_float16(module: nn.Module, args: Any, output: Any) -> Any:
    """A user's global forward hook that replaces float16 outputs, clamped to +-30000."""
    if isinstance(output, torch.Tensor) and output.dtype == torch.float16:
        return output.clamp(-30000, 30000)
    return None


class Offset(nn.Module):
    """Adds 40000: a float16 output within AMP105's margin (finite)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 40000.0
