"""Latency of ``amplint server``: time from ``didChange`` to the matching ``publishDiagnostics``.

Generates a ~2,000-line training module (many functions and classes, a handful of AMP bugs),
starts the server over stdio, and times ~20 edits. Two runs:

* ``debounce=0``: the server's own cost (parse, analyse, serialise, one stdio round trip);
* ``debounce=150 ms`` (the default): what a typing user sees, i.e. the first plus the
  deliberate 150 ms of quiet the server waits for before checking.

    .venv/bin/python benchmarks/bench_lsp_latency.py [--changes 20] [--lines 2000]
"""

from __future__ import annotations

import argparse
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


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(text: str, changes: int, debounce_ms: int) -> tuple[list[float], int]:
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
            for version in range(2, changes + 2):
                # A realistic keystroke: one constant changes, the file stays valid.
                edited = text.replace("LR = 0.001", f"LR = 0.001 * {version}", 1)
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
    args = parser.parse_args()
    text = training_module(args.lines)
    print(f"document: {text.count(chr(10))} lines, {len(text) // 1024} KiB")
    for debounce in (0, 150):
        timings, findings = measure(text, args.changes, debounce)
        print(
            f"debounce {debounce:>3} ms: {findings} diagnostics; didChange -> publishDiagnostics "
            f"over {len(timings)} changes: median {statistics.median(timings):.0f} ms, "
            f"p95 {percentile(timings, 0.95):.0f} ms, max {max(timings):.0f} ms"
            + (f" (of which {debounce} ms is the debounce)" if debounce else "")
        )


if __name__ == "__main__":
    main()
