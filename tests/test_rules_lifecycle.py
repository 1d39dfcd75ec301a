"""Scaler lifecycle rules (AMP009, AMP010, AMP012, AMP013, AMP014) against real torch.

Each test lints a small CPU training script, applies amplint's fix, and runs both versions
with torch to show the finding is a real failure and the fixed script follows PyTorch's AMP
recipe. CPU float16 autocast and ``torch.amp.GradScaler("cpu")`` stand in for CUDA.
"""

from __future__ import annotations

import pytest

from amplint.engine import fix_bytes, lint_bytes

torch = pytest.importorskip("torch")

SETUP = """
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
data = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(6)]
"""


def _codes(source: str, code: str) -> list[int]:
    return [f.location.row for f in lint_bytes(source.encode(), "t.py", {code}).findings]


def _fixed(source: str, code: str, unsafe: bool = False) -> str:
    result = fix_bytes(source.encode(), "t.py", {code}, unsafe=unsafe)
    assert result.data is not None, f"{code} offered no fix"
    return result.data.decode()


def _run(source: str) -> dict:
    namespace: dict = {"__name__": "amplint_test"}
    exec(compile(source, "t.py", "exec"), namespace)
    return namespace


def _weights(namespace: dict) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in namespace["model"].parameters()])


# -- AMP009 ------------------------------------------------------------------------------

HALF = (
    SETUP
    + """
model.half()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
)


def test_amp009_half_parameters_make_the_scaler_raise_and_the_fix_trains() -> None:
    assert _codes(HALF, "AMP009") == [7]
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        _run(HALF)
    assert fix_bytes(HALF.encode(), "t.py", {"AMP009"}).data is None  # the fix is unsafe
    fixed = _fixed(HALF, "AMP009", unsafe=True)
    assert "model.half()" not in fixed
    namespace = _run(fixed)
    assert all(p.dtype == torch.float32 for p in namespace["model"].parameters())
    assert _codes(fixed, "AMP009") == []


def test_amp009_fused_optimizer_accepts_half_gradients_silently() -> None:
    """Why the docs call the fused case worse: no error at all, float16 weights train."""
    source = HALF.replace(
        "torch.optim.SGD(model.parameters(), lr=0.1)",
        "torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)",
    )
    assert _codes(source, "AMP009") == [7]
    try:
        namespace = _run(source)
    except (RuntimeError, ValueError) as error:  # fused kernels this build lacks on CPU
        pytest.skip(f"fused Adam unavailable here: {error}")
    assert all(p.dtype == torch.float16 for p in namespace["model"].parameters())


# -- AMP010 ------------------------------------------------------------------------------

PER_STEP = (
    SETUP
    + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
start = [p.detach().clone() for p in model.parameters()]
for x, y in data * 4:
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 24)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
)


def _moved(namespace: dict) -> bool:
    after = list(namespace["model"].parameters())
    return any(not torch.equal(a, b) for a, b in zip(namespace["start"], after, strict=True))


def test_amp010_fresh_scaler_skips_every_step_and_the_hoisted_one_recovers() -> None:
    assert _codes(PER_STEP, "AMP010") == [10]
    broken = _run(PER_STEP)
    assert not _moved(broken), "every step overflows at the initial scale and is skipped"
    fixed = _fixed(PER_STEP, "AMP010")
    assert fixed.index("GradScaler") < fixed.index("for x, y in data * 4")
    repaired = _run(fixed)
    assert _moved(repaired), "the scale backs off across steps and training proceeds"
    assert repaired["scaler"].get_scale() < 2.0**24
    assert _codes(fixed, "AMP010") == []


# -- AMP012 ------------------------------------------------------------------------------

STEP_INSIDE = (
    SETUP
    + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    with torch.autocast("cpu", dtype=torch.float16):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    with torch.autocast("cpu", dtype=torch.float16):
        scaler.step(optimizer)
        scaler.update()
"""
)

RECIPE = (
    SETUP
    + """
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
"""
)


def test_amp012_fix_gives_the_recipe_and_runs() -> None:
    assert _codes(STEP_INSIDE, "AMP012") == [11, 15, 16]
    fixed = _fixed(STEP_INSIDE, "AMP012")
    assert fixed == RECIPE
    assert torch.equal(_weights(_run(fixed)), _weights(_run(RECIPE)))


def test_amp012_leaves_steps_after_a_backward_to_amp001() -> None:
    source = STEP_INSIDE.replace(
        "        loss = torch.nn.functional.mse_loss(model(x).float(), y)\n    scaler",
        "        loss = torch.nn.functional.mse_loss(model(x).float(), y)\n        scaler",
    )
    both = fix_bytes(source.encode(), "t.py", {"AMP001", "AMP012"}).data
    assert both is not None
    assert lint_bytes(both, "t.py", {"AMP001", "AMP012"}).findings == []
    _run(both.decode())


# -- AMP013 ------------------------------------------------------------------------------

CHECKPOINT = (
    SETUP
    + """
import io
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 30)
for x, y in data:
    with torch.autocast("cpu", dtype=torch.float16):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
buffer = io.BytesIO()
torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
buffer.seek(0)
checkpoint = torch.load(buffer)
"""
)


def test_amp013_fix_saves_the_scale_and_a_resumed_scaler_restores_it() -> None:
    assert _codes(CHECKPOINT, "AMP013") == [18]
    assert "scaler" not in _run(CHECKPOINT)["checkpoint"]
    fixed = _fixed(CHECKPOINT, "AMP013")
    namespace = _run(fixed)
    resumed = torch.amp.GradScaler("cpu", init_scale=2.0**30)
    resumed.load_state_dict(namespace["checkpoint"]["scaler"])
    assert resumed.get_scale() == namespace["scaler"].get_scale() < 2.0**30
    assert _codes(fixed, "AMP013") == []


# -- AMP014 ------------------------------------------------------------------------------

BF16 = (
    SETUP
    + """
amp_dtype = torch.bfloat16
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu")
for x, y in data:
    with torch.autocast("cpu", dtype=amp_dtype):
        loss = torch.nn.functional.mse_loss(model(x).float(), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
"""
)


def test_amp014_fix_disables_the_scaler_for_bfloat16_only() -> None:
    assert _codes(BF16, "AMP014") == [9]
    fixed = _fixed(BF16, "AMP014")
    assert 'GradScaler("cpu", enabled=(amp_dtype == torch.float16))' in fixed
    namespace = _run(fixed)
    assert not namespace["scaler"].is_enabled()
    plain = _run(
        fixed.replace("scaler.scale(loss).backward()", "loss.backward()")
        .replace("scaler.step(optimizer)", "optimizer.step()")
        .replace("    scaler.update()\n", "")
    )
    assert torch.equal(_weights(namespace), _weights(plain))
    as_fp16 = _run(fixed.replace("amp_dtype = torch.bfloat16", "amp_dtype = torch.float16"))
    assert as_fp16["scaler"].is_enabled()
    assert _codes(fixed, "AMP014") == []
