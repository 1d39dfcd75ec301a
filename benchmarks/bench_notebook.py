"""A notebook with large outputs against its code cells as one ``.py`` file.

Builds a notebook of a few dozen code cells of real AMP training code (with findings) whose
outputs hold base64 plots and long training logs (``--output-mb`` in all, default 60 MB),
and the same code cells written as a ``.py`` file. Then, interleaved over ``--rounds``:

* ``py``: ``amplint check --no-cache train.py`` (a subprocess, as users run it);
* ``ipynb``: ``amplint check --no-cache train.ipynb``.

Prints the median wall time of each and the ratio ipynb / py, plus the in-process time of
reading the notebook's cells alone (``read_notebook``). The outputs are handed whole to
the C JSON decoder and never analysed (nor hashed: the cache key is the code cells), so
the only extra work is decoding the JSON, a few milliseconds per megabyte: ipynb / py is
about 1.0 with a few MB of outputs and grows only with that decoding beyond.

    .venv/bin/python benchmarks/bench_notebook.py [--rounds 5] [--output-mb 60]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amplint.notebook.jsonfile import read_notebook

CELLS = [
    "import torch\nfrom torch import nn\nfrom torch.cuda.amp import GradScaler, autocast",
    "model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).cuda()\n"
    "optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)\nscaler = GradScaler()",
    "def evaluate(loader):\n    model.eval()\n    total = 0.0\n    with torch.no_grad():\n"
    "        for x, y in loader:\n            with autocast():\n"
    "                total += nn.functional.cross_entropy(model(x), y).item()\n"
    "    return total / len(loader)",
]
LOOP = (
    "for epoch in range({n}):\n    model.train()\n    for x, y in train_loader:\n"
    "        optimizer.zero_grad()\n        with autocast():\n"
    "            loss = nn.functional.cross_entropy(model(x), y)\n"
    "        scaler.scale(loss).backward()\n"
    "        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n"
    "        scaler.step(optimizer)\n        scaler.update()\n"
    "    print(epoch, evaluate(val_loader))"
)


def build(directory: Path, output_mb: int, loops: int) -> tuple[Path, Path]:
    sources = CELLS + [LOOP.format(n=i + 1) for i in range(loops)]
    per_cell = output_mb * 1_000_000 // len(sources)
    image = base64.b64encode(os.urandom(per_cell * 3 // 8)).decode()
    log = "epoch 1 step 100 loss 2.3025 lr 3e-4 scale 65536.0\n" * (per_cell // 2 // 52)
    cells = []
    for count, source in enumerate(sources, 1):
        cells.append(
            {
                "cell_type": "code",
                "execution_count": count,
                "id": f"cell{count}",
                "metadata": {},
                "outputs": [
                    {"name": "stdout", "output_type": "stream", "text": log.splitlines(True)},
                    {
                        "data": {"image/png": image, "text/plain": ["<Figure>"]},
                        "metadata": {},
                        "output_type": "display_data",
                    },
                ],
                "source": source.splitlines(True),
            }
        )
    document = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    notebook = directory / "train.ipynb"
    notebook.write_text(json.dumps(document, indent=1) + "\n")
    script = directory / "train.py"
    script.write_text("\n".join(sources) + "\n")
    return notebook, script


def timed(path: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "amplint", "check", "--no-cache", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 1:
        raise SystemExit(f"unexpected exit {result.returncode}: {result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output-mb", type=int, default=60)
    parser.add_argument("--loops", type=int, default=30, help="training-loop cells")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        notebook, script = build(Path(temporary), args.output_mb, args.loops)
        size = notebook.stat().st_size / 1e6
        print(
            f"notebook {size:.1f} MB ({args.loops + len(CELLS)} code cells); "
            f"its code as .py {script.stat().st_size / 1e3:.1f} kB"
        )
        times: dict[str, list[float]] = {"py": [], "ipynb": []}
        for _ in range(args.rounds):
            times["py"].append(timed(script))
            times["ipynb"].append(timed(notebook))
        data = notebook.read_bytes()
        start = time.perf_counter()
        read_notebook(data)
        reading = time.perf_counter() - start
    py, ipynb = statistics.median(times["py"]), statistics.median(times["ipynb"])
    print(f"amplint check train.py     {py * 1000:8.0f} ms (median of {args.rounds})")
    print(f"amplint check train.ipynb  {ipynb * 1000:8.0f} ms")
    print(f"ratio ipynb / py           {ipynb / py:8.2f}")
    print(f"reading the cells alone    {reading * 1000:8.0f} ms ({size:.0f} MB of JSON)")


if __name__ == "__main__":
    main()
