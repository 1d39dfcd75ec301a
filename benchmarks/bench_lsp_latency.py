"""Latency of ``amplint server``: time from ``didChange`` to the matching ``publishDiagnostics``.

Generates a ~2,000-line training module (many functions and classes, several AMP bugs with
fixes), starts the server over stdio, and times ``--changes`` edits (at least 20): each is a
keystroke typed after a short pause, alternating between a module-level constant and a line
in the middle of the file, and the clock runs from sending ``didChange`` to receiving the
``publishDiagnostics`` for that document version. Two runs:

* ``debounce 0 ms``: the server's own cost (parse, analyse, serialise, one stdio round trip);
* ``debounce 150 ms`` (the default): what a user sees. A change after a quiet spell is
  checked at once; only a burst of changes waits for the debounce interval's quiet.

The target is 300 ms on a 2-core machine; the ratio printed is median / target (< 1: met).

    .venv/bin/python benchmarks/bench_lsp_latency.py [--changes 20] [--lines 2000] [--pause 0.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lsp_helpers import LspClient

HEADER = '''\
"""A generated training module for the language server benchmark."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LR = 0.001
'''

BLOCK = '''

class Block{i}(nn.Module):
    """Residual MLP block number {i}."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 4 * width)
        self.fc2 = nn.Linear(4 * width, width)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.norm(x)
        x = F.gelu(self.fc1(x))
        x = self.dropout(self.fc2(x))
        return x + residual


def schedule_{i}(step: int, warmup: int = 100, total: int = 10_000) -> float:
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def evaluate_{i}(model: nn.Module, loader) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(x)
            total += F.cross_entropy(logits.float(), y).item()
            count += 1
    model.train()
    return total / max(count, 1)
'''

CORRECT_LOOP = """

def train_ok_{i}(model, optimizer, loader, epochs: int = 1) -> None:
    scaler = torch.amp.GradScaler("cuda")
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
"""

BUGGY_LOOP = """

def train_buggy_{i}(model, optimizer, loader) -> None:
    for x, y in loader:
        optimizer.zero_grad()
        with torch.autocast("cuda"):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        optimizer.step()
"""


def training_module(lines: int) -> str:
    parts = [HEADER]
    i = 0
    while sum(part.count("\n") for part in parts) < lines:
        parts.append(BLOCK.format(i=i))
        parts.append(BUGGY_LOOP.format(i=i) if i % 6 == 0 else CORRECT_LOOP.format(i=i))
        i += 1
    return "".join(parts)


TARGET_MS = 300.0


def keystrokes(text: str, changes: int) -> list[str]:
    """Versions 2.. of the document: digits typed into two places, one at a time."""
    middle = text.index("return 0.5 * (1.0", len(text) // 2)
    versions = []
    top, mid = "0.001", "0.5"
    for change in range(changes):
        digit = str(change % 9 + 1)
        if change % 2 == 0:
            top += digit
        else:
            mid += digit
        head = text[:middle].replace("LR = 0.001", f"LR = {top}", 1)
        tail = text[middle:].replace("return 0.5 * (1.0", f"return {mid} * (1.0", 1)
        versions.append(head + tail)
    return versions


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(text: str, changes: int, debounce_ms: int, pause: float) -> tuple[list[float], int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        client = LspClient(
            [sys.executable, "-m", "amplint", "server"],
            cwd=root,
            env={"AMPLINT_CACHE_DIR": str(root / "cache")},
        )
        try:
            client.initialize(root, options={"debounceMs": debounce_ms})
            uri = (root / "train.py").as_uri()
            mark = client.mark()
            client.open(uri, text)
            findings = len(client.diagnostics(uri, mark, version=1))
            timings = []
            for version, edited in enumerate(keystrokes(text, changes), start=2):
                # The user pauses between edits (and the server goes idle), as after typing.
                time.sleep(pause)
                mark = client.mark()
                started = time.perf_counter()
                client.change(uri, edited, version)
                client.diagnostics(uri, mark, version=version)
                timings.append((time.perf_counter() - started) * 1000)
            client.shutdown()
        finally:
            client.kill()
    return timings, findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between edits")
    args = parser.parse_args()
    changes = max(args.changes, 20)
    text = training_module(args.lines)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"document: {text.count(chr(10))} lines, {len(text) // 1024} KiB; {cores} cores")
    for debounce in (0, 150):
        timings, findings = measure(text, changes, debounce, args.pause)
        median = statistics.median(timings)
        print(
            f"debounce {debounce:>3} ms: {findings} diagnostics; didChange -> publishDiagnostics "
            f"over {len(timings)} changes: median {median:.0f} ms, "
            f"p90 {percentile(timings, 0.90):.0f} ms, max {max(timings):.0f} ms; "
            f"target ratio {median / TARGET_MS:.2f} (median / {TARGET_MS:.0f} ms)"
        )


if __name__ == "__main__":
    main()
