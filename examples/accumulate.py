"""Micro-batch gradient accumulation in the style of nanoGPT's training loop.

Mistake: the backward pass of each micro-step runs inside the autocast context `ctx`.
The scaler is correct: enabled only for float16, stepped and updated once per accumulation.
"""

from contextlib import nullcontext

import torch
from torch import nn

device_type = "cpu"
dtype = "bfloat16"
gradient_accumulation_steps = 4
max_iters = 5

ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
ctx = (
    nullcontext()
    if dtype == "float32"
    else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))

torch.manual_seed(0)
model = nn.Sequential(nn.Embedding(64, 32), nn.Flatten(), nn.Linear(32 * 8, 64))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)


def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 64, (8, 8))
    return x, x[:, 0]


for iter_num in range(max_iters):
    for micro_step in range(gradient_accumulation_steps):
        X, Y = get_batch()
        with ctx:
            logits = model(X)
            loss = nn.functional.cross_entropy(logits, Y) / gradient_accumulation_steps
            scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    print(f"iter {iter_num}: loss {loss.item() * gradient_accumulation_steps:.4f}")
