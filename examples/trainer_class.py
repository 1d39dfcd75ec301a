"""A small trainer class in the style of many research code bases.

Mistake: the GradScaler's step() is never followed by update(), so the loss scale never
adapts, and the second iteration crashes with "unscale_() is being called after step()".
"""

import torch
from torch import nn


class Trainer:
    def __init__(self, model: nn.Module, lr: float = 1e-3, use_amp: bool = True) -> None:
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        self.scaler = torch.amp.GradScaler("cpu", enabled=use_amp)
        self.use_amp = use_amp

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        inputs, targets = batch
        with torch.autocast("cpu", dtype=torch.float16, enabled=self.use_amp):
            logits = self.model(inputs)
            loss = nn.functional.cross_entropy(logits.float(), targets)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1.0)
        self.scaler.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def fit(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for step, batch in enumerate(batches):
            loss = self.training_step(batch)
            if step % 10 == 0:
                print(f"step {step}: loss {loss:.4f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 4))
    data = [(torch.randn(16, 32), torch.randint(0, 4, (16,))) for _ in range(20)]
    Trainer(net).fit(data)
