"""The same CPU training loop as runtime_buggy_train.py, written correctly.

    amplint run examples/runtime_correct_train.py --steps 6

amplint reports no finding: the script's own output is unchanged, followed by amplint's
numerical-health summary.
"""

import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=6)
parser.add_argument("--exit-code", type=int, default=0)
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
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()

print(f"trained {args.steps} steps, last loss {loss.item():.4f}")
raise SystemExit(args.exit_code)
