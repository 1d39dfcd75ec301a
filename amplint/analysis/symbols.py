"""The torch symbols amplint knows, under every public spelling PyTorch accepts."""

from __future__ import annotations

from enum import Enum


class Symbol(Enum):
    AUTOCAST = "autocast"
    CUDA_AUTOCAST = "cuda-autocast"  # legacy torch.cuda.amp.autocast(enabled, dtype, cache)
    CPU_AUTOCAST = "cpu-autocast"  # legacy torch.cpu.amp.autocast(enabled, dtype, cache)
    GRAD_SCALER = "grad-scaler"
    CUDA_GRAD_SCALER = "cuda-grad-scaler"
    CPU_GRAD_SCALER = "cpu-grad-scaler"
    SHARDED_GRAD_SCALER = "sharded-grad-scaler"
    PARTIAL = "functools.partial"
    NULL_CONTEXT = "null-context"
    AUTOGRAD_BACKWARD = "torch.autograd.backward"
    AUTOGRAD_GRAD = "torch.autograd.grad"
    NO_GRAD = "no-grad"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"
    CONTEXTMANAGER = "contextlib.contextmanager"
    OPTIMIZER_CLASS = "torch.optim.Optimizer-subclass"
    LR_SCHEDULER = "torch.optim.lr_scheduler"


_EXACT: dict[str, Symbol] = {
    "torch.autocast": Symbol.AUTOCAST,
    "torch.amp.autocast": Symbol.AUTOCAST,
    "torch.amp.autocast_mode.autocast": Symbol.AUTOCAST,
    "torch.cuda.amp.autocast": Symbol.CUDA_AUTOCAST,
    "torch.cuda.amp.autocast_mode.autocast": Symbol.CUDA_AUTOCAST,
    "torch.cpu.amp.autocast": Symbol.CPU_AUTOCAST,
    "torch.cpu.amp.autocast_mode.autocast": Symbol.CPU_AUTOCAST,
    "torch.GradScaler": Symbol.GRAD_SCALER,
    "torch.amp.GradScaler": Symbol.GRAD_SCALER,
    "torch.amp.grad_scaler.GradScaler": Symbol.GRAD_SCALER,
    "torch.cuda.amp.GradScaler": Symbol.CUDA_GRAD_SCALER,
    "torch.cuda.amp.grad_scaler.GradScaler": Symbol.CUDA_GRAD_SCALER,
    "torch.cpu.amp.GradScaler": Symbol.CPU_GRAD_SCALER,
    "torch.cpu.amp.grad_scaler.GradScaler": Symbol.CPU_GRAD_SCALER,
    "torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler": Symbol.SHARDED_GRAD_SCALER,
    "torch.distributed.fsdp.ShardedGradScaler": Symbol.SHARDED_GRAD_SCALER,
    "functools.partial": Symbol.PARTIAL,
    "contextlib.nullcontext": Symbol.NULL_CONTEXT,
    "contextlib.suppress": Symbol.NULL_CONTEXT,
    "contextlib.ExitStack": Symbol.NULL_CONTEXT,
    "torch.autograd.backward": Symbol.AUTOGRAD_BACKWARD,
    "torch.autograd.grad": Symbol.AUTOGRAD_GRAD,
    "torch.no_grad": Symbol.NO_GRAD,
    "torch.inference_mode": Symbol.NO_GRAD,
    "torch.float16": Symbol.FLOAT16,
    "torch.half": Symbol.FLOAT16,
    "torch.bfloat16": Symbol.BFLOAT16,
    "torch.float32": Symbol.FLOAT32,
    "torch.float": Symbol.FLOAT32,
    "contextlib.contextmanager": Symbol.CONTEXTMANAGER,
}

AUTOCAST_SYMBOLS = frozenset({Symbol.AUTOCAST, Symbol.CUDA_AUTOCAST, Symbol.CPU_AUTOCAST})
SCALER_SYMBOLS = frozenset(
    {
        Symbol.GRAD_SCALER,
        Symbol.CUDA_GRAD_SCALER,
        Symbol.CPU_GRAD_SCALER,
        Symbol.SHARDED_GRAD_SCALER,
    }
)
DTYPE_NAMES = {Symbol.FLOAT16: "float16", Symbol.BFLOAT16: "bfloat16", Symbol.FLOAT32: "float32"}


def symbol_for(qualified_name: str) -> Symbol | None:
    """Map a fully qualified name (after import resolution) to the symbol it denotes."""
    exact = _EXACT.get(qualified_name)
    if exact is not None:
        return exact
    if qualified_name.startswith("torch.optim.lr_scheduler."):
        return Symbol.LR_SCHEDULER
    if qualified_name.startswith("torch.optim.") and qualified_name.count(".") == 2:
        return Symbol.OPTIMIZER_CLASS
    return None
