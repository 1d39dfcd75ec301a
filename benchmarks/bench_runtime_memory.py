"""Extra memory of amplint's numerical-health checks on a gradient-statistics step.

Trains a model made of many equal linear layers with float16 autocast and GradScaler, and
measures, for the step where amplint takes its gradient statistics (step 0), the peak of
memory allocated above what was allocated when the step began:

* ``torch``: torch's own autocast and GradScaler;
* ``amplint``: ``amplint.runtime.install(health=True)``;
* ``unchunked``: the same with the scratch bound lifted (one copy of every gradient, as
  the statistics were taken before), to show what the bound saves.

On the CPU the allocations are read from ``torch.profiler`` (``profile_memory=True``): the
running sum of every allocation and free in time order, whose maximum is the step's peak.
On CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.

Prints each peak, the ratio amplint/torch, and amplint's extra memory against the size of
all gradients and of the largest single gradient. Target: the extra memory is bounded by
the larger of a fixed chunk (4 MiB) and the largest gradient, far below all gradients.

    .venv/bin/python benchmarks/bench_runtime_memory.py [--layers 96] [--width 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import warnings

import amplint.runtime as ar
import torch
from amplint.runtime import reductions
from torch import nn

MIB = 1 << 20


def build(layers: int, width: int, device: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    return model, optimizer


def one_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: str) -> None:
    x = torch.randn(8, model[0].in_features, device=device)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10)
    with torch.autocast(device, dtype=torch.float16):
        loss = model(x).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


def cpu_peak(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Peak bytes allocated above the level at the step's start, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        one_step(model, optimizer, "cpu")
    events = [
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    ]
    level = peak = 0
    for _, change in sorted(events):
        level += change
        peak = max(peak, level)
    return peak


def cuda_peak(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    one_step(model, optimizer, "cuda")
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start


def measure(variant: str, args: argparse.Namespace) -> int:
    model, optimizer = build(args.layers, args.width, args.device)
    ar.reset()
    scratch = reductions.SCRATCH_NUMEL
    if variant != "torch":
        ar.install(mode="raise", health=True)
    if variant == "unchunked":
        reductions.SCRATCH_NUMEL = 1 << 62  # one scratch copy of every gradient, as before
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            peak = (cpu_peak if args.device == "cpu" else cuda_peak)(model, optimizer)
    finally:
        reductions.SCRATCH_NUMEL = scratch
        ar.uninstall()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=96)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    peaks: dict[str, list[int]] = {"torch": [], "amplint": [], "unchunked": []}
    for _ in range(args.rounds):
        for variant in peaks:
            peaks[variant].append(measure(variant, args))
    model, _ = build(args.layers, args.width, "cpu")
    grads = sum(p.numel() * 4 for p in model.parameters())
    largest = max(p.numel() * 4 for p in model.parameters())
    torch_peak, amplint_peak = min(peaks["torch"]), min(peaks["amplint"])
    extra = amplint_peak - torch_peak
    bound = max(4 * MIB, largest)
    print(
        f"[{args.device}] torch {torch.__version__}: {args.layers} x Linear({args.width}), "
        f"gradients {grads / MIB:.1f} MiB in all, largest {largest / MIB:.2f} MiB"
    )
    print(f"  peak above the step's start, torch:   {torch_peak / MIB:8.2f} MiB")
    print(f"  peak above the step's start, amplint: {amplint_peak / MIB:8.2f} MiB")
    unchunked = min(peaks["unchunked"])
    print(
        f"  (amplint with one scratch copy of all gradients, as before: "
        f"{unchunked / MIB:.2f} MiB, extra {(unchunked - torch_peak) / MIB:.2f} MiB)"
    )
    print(
        f"  ratio amplint/torch {amplint_peak / max(torch_peak, 1):.3f}; amplint's extra "
        f"{extra / MIB:.2f} MiB = {extra / grads:.1%} of all gradients, "
        f"{extra / largest:.2f}x the largest gradient "
        f"(bound: {bound / MIB:.0f} MiB, {'met' if extra <= bound else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
