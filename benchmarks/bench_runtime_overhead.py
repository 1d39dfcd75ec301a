"""Overhead of amplint.runtime on a real CPU training step, and host readbacks per step.

Trains a 2-layer TransformerEncoder (d_model 128) with float16 CPU autocast and
GradScaler("cpu"), alternating rounds with torch's classes (A) and with amplint installed
(B): A B A B ... so drift in machine speed hits both alike. Prints the median step time of
each variant, their ratio (target <= 1.05), and the tensor readbacks to the host per step
(Tensor.item / __bool__ / __float__ / __int__ / tolist), counted during the timed steps.

    .venv/bin/python benchmarks/bench_runtime_overhead.py [--rounds 6] [--steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import amplint.runtime as ar
import torch
from bench_health import counting_readbacks  # also counts CUDA synchronizations
from torch import nn


class Setup:
    """Model, optimizer and data, rebuilt identically for each round."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        layer = nn.TransformerEncoderLayer(
            d_model=128, nhead=4, dim_feedforward=256, dropout=0.0, batch_first=True
        )
        self.model = nn.Sequential(nn.TransformerEncoder(layer, num_layers=2), nn.Linear(128, 1))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(seed + 1)
        self.data = [
            (
                torch.randn(16, 32, 128, generator=generator),
                torch.randn(16, 32, 1, generator=generator),
            )
            for _ in range(8)
        ]


def train_round(steps: int, warmup: int) -> tuple[list[float], float, list[torch.Tensor]]:
    """One round with whatever torch.autocast / torch.amp.GradScaler currently are."""
    setup = Setup()
    model, optimizer = setup.model, setup.optimizer
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    times: list[float] = []

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        scaler.step(optimizer)
        scaler.update()

    for i in range(warmup):
        step(*setup.data[i % len(setup.data)])
    with counting_readbacks() as counter:
        for i in range(steps):
            x, y = setup.data[i % len(setup.data)]
            start = time.perf_counter()
            step(x, y)
            times.append(time.perf_counter() - start)
    return times, counter[0] / steps, [p.detach().clone() for p in model.parameters()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per variant (ABAB...)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    times: dict[str, list[float]] = {"torch": [], "amplint": []}
    readbacks: dict[str, list[float]] = {"torch": [], "amplint": []}
    final: dict[str, list[torch.Tensor]] = {}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for variant in ("torch", "amplint"):
            if variant == "amplint":
                ar.install(mode="raise")  # a finding would abort the benchmark: it must be clean
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    round_times, per_step, params = train_round(args.steps, args.warmup)
            finally:
                ar.uninstall()
            times[variant].extend(round_times)
            readbacks[variant].append(per_step)
            final[variant] = params

    identical = all(
        torch.equal(a, b) for a, b in zip(final["torch"], final["amplint"], strict=True)
    )
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds x {args.steps} steps per variant, interleaved"
    )
    for variant in ("torch", "amplint"):
        print(
            f"{variant:>8}: median step {medians[variant] * 1e3:8.2f} ms, "
            f"host readbacks per step {statistics.mean(readbacks[variant]):.2f}"
        )
    ratio = medians["amplint"] / medians["torch"]
    print(f"   ratio: {ratio:.3f} (target <= 1.05)")
    print(f"findings: {len(ar.report())}, parameters bit-identical: {identical}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
