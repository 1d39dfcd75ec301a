"""A small CPU training loop with AMP mistakes, for `amplint run` to find.

    amplint run examples/runtime_buggy_train.py --steps 6

Each mistake trains without an error message from torch; amplint names the line.
"""

import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=6)
args = parser.parse_args()

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
scaler = torch.amp.GradScaler("cpu")

for _step in range(args.steps):
    x, y = torch.randn(8, 16), torch.randn(8, 1)
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()  # AMP001: backward inside autocast
    # AMP006: clipping gradients that are still multiplied by the loss scale
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()

print(f"trained {args.steps} steps, last loss {loss.item():.4f}")
