"""Cost of amplint's numerical-health checks on a real training step, against a
NanDetector-style per-module detector, and host readbacks per step.

Trains a 2-layer TransformerEncoder (d_model 128), or with ``--model gpt`` a GPT shaped as
nanoGPT's (4 blocks of width 128), with float16 autocast and GradScaler, in interleaved
rounds of four variants (torch, usage, health, nandetector, torch, ...):

* ``torch``: torch's own autocast and GradScaler;
* ``usage``: ``amplint.runtime.install()`` (usage checks);
* ``health``: ``install(health=True, every=N)``: usage + numerical health; ``--every``
  defaults to 16, ``amplint run``'s default (``--every 1``: the statistics handed to the
  host at every step, the most expensive setting);
* ``nandetector``: torch's classes plus a detector written the way fairseq's NanDetector
  works: forward and backward hooks on every module that run ``isnan(t).any()`` and
  ``isinf(t).any()`` on each output / output gradient and branch on them on the host.

Prints the median step time of each, the ratio to torch, the time each adds over torch,
and the host readbacks per step (Tensor.item / __bool__ / __float__ / __int__ / tolist,
plus torch.cuda / Event / Stream synchronize calls), counted during the timed steps.
Targets: health / torch <= 1.03, no readback added, and health adding at least 10x less
time than the NanDetector-style detector.

AMP105 measures the float16 outputs of every iteration of the first ``activations_first``
(100) and of one in ``activations_every`` (16) after them, plus every iteration after a
skipped step. The rounds are short, so they run with ``--activations-first`` (default 0):
what a long run pays after its first iterations. The paired measurement runs with the
defaults and reports the first iterations (every one measured) and those after them apart.

On CUDA (when available) the same runs use a fused AdamW, whose GradScaler path has no
host sync of its own, and the torch / usage / health steps run under
``torch.cuda.set_sync_debug_mode("error")``: any synchronisation added there raises.

    .venv/bin/python benchmarks/bench_health.py [--rounds 6] [--steps 15] [--device cpu]
        [--model transformer|gpt]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import amplint.runtime as ar
import torch
from amplint.runtime.health_config import HealthConfig
from torch import nn

READBACKS = ("item", "__bool__", "__float__", "__int__", "tolist")
VARIANTS = ("torch", "usage", "health", "nandetector")


@contextmanager
def counting_readbacks() -> Iterator[list[int]]:
    counter = [0]
    patched: list[tuple[Any, str, Any]] = [
        (torch.Tensor, name, getattr(torch.Tensor, name)) for name in READBACKS
    ]
    if torch.cuda.is_available():
        patched += [
            (torch.cuda, "synchronize", torch.cuda.synchronize),
            (torch.cuda.Event, "synchronize", torch.cuda.Event.synchronize),
            (torch.cuda.Stream, "synchronize", torch.cuda.Stream.synchronize),
        ]

    def counted(original: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            counter[0] += 1
            return original(*args, **kwargs)

        return wrapper

    for owner, name, original in patched:
        setattr(owner, name, counted(original))
    try:
        yield counter
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)


class NanDetector:
    """Per-module isnan/isinf with a host read per tensor, as fairseq's NanDetector does."""

    def __init__(self, model: nn.Module) -> None:
        self.handles = []
        self.found: str | None = None
        for name, module in model.named_modules():
            module.__name = name  # type: ignore[attr-defined]
            self.handles.append(module.register_forward_hook(self.forward_hook))
            self.handles.append(module.register_full_backward_hook(self.backward_hook))

    def _detect(self, tensor: Any, name: str, backward: bool) -> None:
        if not isinstance(tensor, torch.Tensor) or not torch.is_floating_point(tensor):
            return
        if tensor.numel() < 2:
            return
        with torch.no_grad():
            if torch.isnan(tensor).any():  # bool(): a host read
                err = "NaN"
            elif torch.isinf(tensor).any():
                err = "Inf"
            else:
                return
        if self.found is None:
            self.found = f"{err} in {'backward' if backward else 'forward'} of {name}"

    def _apply(self, module: nn.Module, outputs: Any, backward: bool) -> None:
        name = module.__name  # type: ignore[attr-defined]
        if isinstance(outputs, (tuple, list)):
            for output in outputs:
                self._detect(output, name, backward)
        else:
            self._detect(outputs, name, backward)

    def forward_hook(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        self._apply(module, outputs, backward=False)

    def backward_hook(self, module: nn.Module, grad_inputs: Any, grad_outputs: Any) -> None:
        self._apply(module, grad_outputs, backward=True)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention block structure: one qkv projection, causal SDPA, projection."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (
            t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)
            for t in (q, k, v)
        )
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(batch, length, width))


class GptBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Gpt(nn.Module):
    """A GPT shaped as nanoGPT's (token and position embeddings, pre-norm blocks, tied
    head), at CPU sizes."""

    def __init__(self, vocab: int = 512, length: int = 64, width: int = 128) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(length, width)
        self.h = nn.ModuleList([GptBlock(width, heads=4) for _ in range(4)])
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class Setup:
    """Model, optimizer and data, rebuilt identically for each round."""

    def __init__(self, device: str, model: str = "transformer", seed: int = 0) -> None:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed + 1)
        self.gpt = model == "gpt"
        if self.gpt:
            self.model: nn.Module = Gpt().to(device)
            self.data = [
                (
                    torch.randint(512, (8, 64), generator=generator).to(device),
                    torch.randint(512, (8, 64), generator=generator).to(device),
                )
                for _ in range(8)
            ]
        else:
            layer = nn.TransformerEncoderLayer(
                d_model=128, nhead=4, dim_feedforward=256, dropout=0.0, batch_first=True
            )
            self.model = nn.Sequential(
                nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False),
                nn.Linear(128, 1),
            ).to(device)
            self.data = [
                (
                    torch.randn(16, 32, 128, generator=generator).to(device),
                    torch.randn(16, 32, 1, generator=generator).to(device),
                )
                for _ in range(8)
            ]
        fused = {"fused": True} if device == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, **fused)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.gpt:
            return nn.functional.cross_entropy(out.float().view(-1, out.shape[-1]), y.view(-1))
        return nn.functional.mse_loss(out.float(), y)


def training_step(
    setup: Setup, scaler: torch.amp.GradScaler, device: str, x: torch.Tensor, y: torch.Tensor
) -> None:
    """One step of the usual loop: autocast forward, scaled backward, unscale_ and clip, step,
    update (``torch.autocast`` is looked up at each call: amplint's while installed)."""
    setup.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.float16):
        loss = setup.loss(x, y)
    scaler.scale(loss).backward()
    scaler.unscale_(setup.optimizer)
    torch.nn.utils.clip_grad_norm_(setup.model.parameters(), 1.0, foreach=True)
    scaler.step(setup.optimizer)
    scaler.update()


def train_round(
    variant: str, device: str, steps: int, warmup: int, model_kind: str = "transformer"
) -> tuple[list[float], float, list[torch.Tensor]]:
    setup = Setup(device, model_kind)
    model = setup.model
    scaler = torch.amp.GradScaler(device, init_scale=2.0**12)
    detector = NanDetector(model) if variant == "nandetector" else None
    cuda = device == "cuda"
    strict = cuda and variant != "nandetector"
    # On the CPU with one torch thread all the work is this thread's: its CPU time is the
    # step's cost whatever else the machine runs. Otherwise, wall time.
    clock = time.thread_time if not cuda and torch.get_num_threads() == 1 else time.perf_counter
    times: list[float] = []

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        training_step(setup, scaler, device, x, y)

    try:
        for i in range(warmup):
            step(*setup.data[i % len(setup.data)])
        if cuda:
            torch.cuda.synchronize()
        with counting_readbacks() as counter:
            for i in range(steps):
                x, y = setup.data[i % len(setup.data)]
                start = clock()
                if strict:
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    step(x, y)
                finally:
                    if strict:
                        torch.cuda.set_sync_debug_mode(0)
                if cuda:
                    torch.cuda.synchronize()  # timing only: not counted below
                    counter[0] -= 1
                times.append(clock() - start)
    finally:
        if detector is not None:
            detector.close()
    return times, counter[0] / steps, [p.detach().cpu().clone() for p in model.parameters()]


@contextmanager
def attributed_time(variant: str) -> Iterator[list[float]]:
    """Seconds spent inside the checks' own code: amplint's health entry points, or the
    NanDetector-style hooks. Neither counts what the hooks cost torch outside them (the
    hooked module-call path, the backward-hook wrappers), so the comparison is like for like
    and immune to other load on the machine, which end-to-end times on a shared CPU are not.
    """
    from amplint.runtime import activations, health

    total = [0.0]
    if variant == "health":
        targets = [
            (health.ScalerHealth, name)
            for name in ("on_scale", "on_unscale", "on_step_after_unscale", "on_update")
        ]
        targets += [(health.ScalerHealth, "after_update"), (activations.Activations, "hook")]
    else:
        targets = [(NanDetector, "forward_hook"), (NanDetector, "backward_hook")]
    originals = [(owner, name, owner.__dict__[name]) for owner, name in targets]

    def timed(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                total[0] += time.perf_counter() - start

        return wrapper

    for owner, name, original in originals:
        setattr(owner, name, timed(original))
    try:
        yield total
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


@contextmanager
def torch_alone() -> Iterator[None]:
    """amplint's installation set aside for a moment: torch's own functions and classes back
    in place, no optimizer pre-hook, no global forward hook; then amplint's again. For the
    paired measurement only (it reaches into the installation's record of its patches):
    ``uninstall()`` would also hand the health statistics over and forget the run."""
    from amplint.runtime.session import SESSION

    installation = SESSION.live.installation
    forward_hooks = torch.nn.modules.module._global_forward_hooks
    step_hooks = sys.modules["torch.optim.optimizer"]._global_optimizer_pre_hooks
    saved_forward, saved_step = dict(forward_hooks), dict(step_hooks)
    for owner, name, previous, _ours in reversed(installation.patches):
        setattr(owner, name, previous)
    forward_hooks.clear()
    step_hooks.clear()
    try:
        yield
    finally:
        for owner, name, _previous, ours in installation.patches:
            setattr(owner, name, ours)
        forward_hooks.update(saved_forward)
        step_hooks.update(saved_step)


def paired(device: str, args: argparse.Namespace) -> None:
    """torch and health alternating step by step in one process, each on its own copy of the
    model (same seed, same batches): the two steps of a pair run within a tenth of a second
    of each other, so slow drifts of the machine cancel out, as they do not between rounds."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    ar.reset()
    plain = Setup(device, args.model)
    plain_scaler = torch.amp.GradScaler(device, init_scale=2.0**12)
    ar.install(mode="raise", health=True, every=args.every)
    dense = HealthConfig().activations_first  # iterations with every one measured
    try:
        checked = Setup(device, args.model)
        checked_scaler = torch.amp.GradScaler(device, init_scale=2.0**12)
        times: dict[str, list[float]] = {"torch": [], "health": []}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for index in range(max(dense, args.warmup) + args.paired):
                x, y = plain.data[index % len(plain.data)]
                order = ("torch", "health") if index % 2 == 0 else ("health", "torch")
                for variant in order:
                    start = clock()
                    if variant == "torch":
                        with torch_alone():
                            start = clock()
                            training_step(plain, plain_scaler, device, x, y)
                            elapsed = clock() - start
                    else:
                        training_step(checked, checked_scaler, device, x, y)
                        elapsed = clock() - start
                    if device == "cuda":
                        torch.cuda.synchronize()
                        elapsed = clock() - start
                    if index >= args.warmup:
                        times[variant].append(elapsed)
        findings = len(ar.report())
    finally:
        ar.uninstall()
    identical = all(
        torch.equal(a, b)
        for a, b in zip(plain.model.parameters(), checked.model.parameters(), strict=True)
    )
    print(
        f"  paired (torch and health alternating step by step in one process), findings "
        f"{findings}, parameters bit-identical: {identical}:"
    )
    first = max(dense - args.warmup, 0)  # timed steps among the iterations all measured
    for label, begin, end in (
        (f"iterations {args.warmup}-{dense - 1}, every one measured by AMP105", 0, first),
        (f"the {args.paired} iterations after them, steady state", first, len(times["torch"])),
    ):
        base, health = times["torch"][begin:end], times["health"][begin:end]
        if len(base) < 2:
            continue
        added = [h - t for t, h in zip(base, health, strict=True)]
        ratio = statistics.mean(health) / statistics.mean(base)
        middle = len(added) // 2
        halves = [statistics.median(added[:middle]), statistics.median(added[middle:])]
        typical = statistics.median(added)
        print(
            f"    {label}: torch {statistics.median(base) * 1e3:.2f} ms, health "
            f"{statistics.median(health) * 1e3:.2f} ms; added {typical * 1e3:+.2f} "
            f"ms (halves {halves[0] * 1e3:+.2f}, {halves[1] * 1e3:+.2f}); ratio of means "
            f"{ratio:.3f} (target <= 1.03)"
        )


def attributed(device: str, args: argparse.Namespace) -> dict[str, float]:
    """Per step, the time inside the checks of health and of the NanDetector-style hooks."""
    result = {}
    for variant in ("health", "nandetector"):
        ar.reset()
        if variant == "health":
            ar.install(
                mode="raise",
                health=True,
                every=args.every,
                activations_first=args.activations_first,
            )
        try:
            with attributed_time(variant) as total, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                train_round(variant, device, args.steps, 0, args.model)
        finally:
            ar.uninstall()
        result[variant] = total[0] / args.steps
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per variant (interleaved)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: CPU steps are then timed by thread CPU time, which "
        "other load on the machine does not inflate; 0: torch's default, wall time)",
    )
    parser.add_argument(
        "--device", action="append", choices=("cpu", "cuda"), help="default: cpu, and cuda if any"
    )
    parser.add_argument(
        "--every", type=int, default=16, help="health: steps between hand-overs to the host"
    )
    parser.add_argument(
        "--activations-first",
        type=int,
        default=0,
        help="health in the rounds: AMP105 measures every iteration until this one (the "
        "default of amplint is 100; 0: one in 16 from the start, what a long run pays)",
    )
    parser.add_argument(
        "--paired",
        type=int,
        default=200,
        help="steps of the paired measurement (torch and health alternating step by step in "
        "one process); 0: skip it",
    )
    parser.add_argument(
        "--model",
        choices=("transformer", "gpt"),
        default="transformer",
        help="transformer: a 2-layer TransformerEncoder; gpt: nanoGPT's block structure, "
        "4 layers of width 128, vocabulary 512, context 64",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for device in devices:
        run_device(device, args)


def run_device(device: str, args: argparse.Namespace) -> None:
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    # Per round, each variant's median step: ratios are taken within a round (the four
    # variants ran back to back), so that drift in machine speed cancels out.
    per_round: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    # Means too: a cost paid on one step in N (amplint's sampled gradient counts) hides
    # from a median.
    per_round_mean: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    readbacks: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    final: dict[str, list[torch.Tensor]] = {}
    findings = 0
    started = time.perf_counter()
    for round_index in range(args.rounds):
        # The order rotates from round to round: no variant always runs first or right
        # after the slow NanDetector-style one.
        shift = round_index % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            ar.reset()
            if variant == "usage":
                ar.install(mode="raise")  # a finding would abort the benchmark
            elif variant == "health":
                ar.install(
                    mode="raise",
                    health=True,
                    every=args.every,
                    activations_first=args.activations_first,
                )
            context = nullcontext()
            try:
                with context, warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    round_times, per_step, params = train_round(
                        variant, device, args.steps, args.warmup, args.model
                    )
                if variant == "health":
                    findings += len(ar.report())
            finally:
                ar.uninstall()
            times[variant].extend(round_times)
            per_round[variant].append(statistics.median(round_times))
            per_round_mean[variant].append(statistics.mean(round_times))
            readbacks[variant].append(per_step)
            final[variant] = params

    # amplint must give torch's numbers; the NanDetector-style hooks need not (its full
    # backward hooks reorder gradient accumulation).
    identical = all(
        all(torch.equal(a, b) for a, b in zip(final["torch"], final[v], strict=True))
        for v in ("usage", "health")
    )
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    base = per_round["torch"]
    ratio = {
        v: statistics.median(r / t for r, t in zip(per_round[v], base, strict=True))
        for v in VARIANTS
    }
    added = {
        v: statistics.median(r - t for r, t in zip(per_round[v], base, strict=True))
        for v in VARIANTS
    }
    clock = "thread CPU time" if device == "cpu" and torch.get_num_threads() == 1 else "wall time"
    print(
        f"[{device}, {args.model}] torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads ({clock}), health every={args.every}, "
        f"{args.rounds} rounds x {args.steps} steps per variant, interleaved; "
        f"ratio and added time: median over rounds of the in-round difference to torch"
    )
    added_mean = {
        v: statistics.median(
            r - t for r, t in zip(per_round_mean[v], per_round_mean["torch"], strict=True)
        )
        for v in VARIANTS
    }
    for variant in VARIANTS:
        print(
            f"{variant:>12}: median step {medians[variant] * 1e3:8.2f} ms, "
            f"ratio {ratio[variant]:.3f}, added {added[variant] * 1e3:+7.2f} ms "
            f"(by means {added_mean[variant] * 1e3:+7.2f} ms), "
            f"host readbacks per step {statistics.mean(readbacks[variant]):.2f}"
        )
    if added["health"] > 0 and added_mean["health"] > 0:
        print(
            "  nandetector added time / health added time: "
            f"{added['nandetector'] / added['health']:.1f}x by medians, "
            f"{added_mean['nandetector'] / added_mean['health']:.1f}x by means (target >= 10)"
        )
    else:
        print("  health added no measurable time (within noise)")
    print(
        f"  health/torch ratio {ratio['health']:.3f} (target <= 1.03); "
        f"readbacks added by health: "
        f"{statistics.mean(readbacks['health']) - statistics.mean(readbacks['torch']):+.2f}/step"
    )
    inside = attributed(device, args)
    print(
        f"  time inside the checks per step: health {inside['health'] * 1e3:.2f} ms, "
        f"nandetector {inside['nandetector'] * 1e3:.2f} ms "
        f"({inside['nandetector'] / inside['health']:.1f}x; target >= 10)"
    )
    print(f"  health findings: {findings}, parameters bit-identical: {identical}")
    if args.paired:
        paired(device, args)
    print(f"  wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
