"""Train a small MLP regressor with float16 autocast on the CPU.

Two AMP mistakes hide here: the backward pass runs inside the autocast region, and float16
is used without a GradScaler. `amplint check examples/` finds both; `amplint fix` repairs them.
"""

import argparse

import torch
from torch import nn


def make_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=generator)
    y = x @ torch.randn(16, 1, generator=generator)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = make_data()

    for epoch in range(args.epochs):
        for start in range(0, len(x), args.batch_size):
            xb, yb = x[start : start + args.batch_size], y[start : start + args.batch_size]
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.float16):
                prediction = model(xb)
                loss = nn.functional.mse_loss(prediction.float(), yb)
                loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
