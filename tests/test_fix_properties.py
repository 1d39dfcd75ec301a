"""Property-based fix safety: for any input, fixing parses, is a fixed point, and keeps the
file's comments, encoding, BOM and newline style."""

from __future__ import annotations

import ast

import hypothesmith
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amplint.catalog import known_codes
from amplint.engine.run import fix_bytes, lint_bytes

CODES = frozenset(known_codes())

# Statements real training loops are made of, AMP mistakes included; a program is a
# random arrangement of them, so the rules fire (and fix) in many combinations.
_FORWARD = [
    "out = model(x)",
    "loss = criterion(out, y)  # the loss",
    "loss = loss / accum",
]
_AFTER = [
    "loss.backward()",
    "scaler.scale(loss).backward()",
    "optimizer.step()",
    "scaler.step(optimizer)",
    "scaler.update()",
    "optimizer.zero_grad()",
    "scaler.unscale_(optimizer)",
    "torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
    "# a comment that must survive",
    "",
]
_CONTEXTS = [
    'torch.autocast("cuda")',
    'torch.autocast("cuda", dtype=torch.float16)',
    'torch.amp.autocast(device_type="cpu", dtype=torch.bfloat16)',
    "ctx",
    "torch.cuda.amp.autocast(enabled=use_amp)",
    'torch.autocast("cuda", enabled=False)',
]
_SETUP = [
    'scaler = torch.amp.GradScaler("cuda")',
    "scaler = torch.cuda.amp.GradScaler(enabled=use_amp)",
    "scaler = GradScaler() if fp16 else None",
    "",
]


@st.composite
def training_programs(draw: st.DrawFn) -> str:
    lines = [
        "import torch",
        "from contextlib import nullcontext",
        "from torch.amp import GradScaler",
    ]
    lines.append('ctx = nullcontext() if cpu else torch.autocast("cuda")')
    lines.append(draw(st.sampled_from(_SETUP)))
    in_function = draw(st.booleans())
    base = "    " if in_function else ""
    if in_function:
        lines.append("def train(model, optimizer, loader):")
    lines.append(f"{base}for i, (x, y) in enumerate(loader):")
    body = base + "    "
    lines.append(f"{body}with {draw(st.sampled_from(_CONTEXTS))}:")
    for statement in draw(st.lists(st.sampled_from(_FORWARD), min_size=1, max_size=3)):
        lines.append(f"{body}    {statement}")
    for statement in draw(st.lists(st.sampled_from(_AFTER), max_size=4)):
        lines.append(f"{body}    {statement}" if statement else "")
    accumulate = draw(st.booleans())
    if accumulate:
        lines.append(f"{body}if (i + 1) % accum == 0:")
        body += "    "
    for statement in draw(st.lists(st.sampled_from(_AFTER), min_size=1, max_size=5)):
        lines.append(f"{body}{statement}" if statement else "")
    return "\n".join(lines) + "\n"


@st.composite
def encoded(draw: st.DrawFn) -> bytes:
    text = draw(training_programs())
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
    return bom + text.replace("\n", newline).encode()


def _comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(encoded())
def test_fix_is_safe_on_training_loops(data: bytes) -> None:
    result = fix_bytes(data, "train.py", CODES, unsafe=True)
    if result.data is None:
        return
    fixed = result.data
    ast.parse(fixed)
    again = fix_bytes(fixed, "train.py", CODES, unsafe=True)
    assert again.data is None, "fixing twice changed the file again"
    assert fixed.startswith(b"\xef\xbb\xbf") == data.startswith(b"\xef\xbb\xbf")
    crlf = b"\r\n" in data
    assert (b"\r\n" in fixed) == crlf
    if crlf:
        assert b"\n" not in fixed.replace(b"\r\n", b"")
    before = data.decode("utf-8-sig")
    after = fixed.decode("utf-8-sig")
    assert sorted(_comments(before)) == sorted(_comments(after))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hypothesmith.from_grammar().map(lambda code: "import torch\nautocast = 1\n" + code))
def test_any_valid_python_is_checked_without_crashing(code: str) -> None:
    data = code.encode()
    findings = lint_bytes(data, "any.py", CODES, prefilter=False).findings
    assert all(f.location.row >= 1 and f.location.column >= 1 for f in findings)
    result = fix_bytes(data, "any.py", CODES, unsafe=True)
    if result.data is not None:
        compile(result.data, "any.py", "exec")


def test_fixes_that_do_not_combine_are_applied_one_after_the_other() -> None:
    """AMP001 dedents the backward and the step out of autocast while AMP002 inserts an
    update at the old indentation: together they do not parse. Each alone does, and the
    file ends with both applied, not with neither (and "2 fixable" forever)."""
    source = (
        "import torch\n"
        'scaler = torch.amp.GradScaler("cuda")\n'
        "for x in loader:\n"
        '    with torch.autocast("cuda"):\n'
        "        loss = model(x).mean()\n"
        "        scaler.scale(loss).backward()\n"
        "        scaler.step(opt)\n"
        "    opt.zero_grad()\n"
    )
    fixed = fix_bytes(source.encode(), "train.py", {"AMP001", "AMP002"})
    assert fixed.data is not None and fixed.remaining == []
    assert fixed.data.decode() == (
        "import torch\n"
        'scaler = torch.amp.GradScaler("cuda")\n'
        "for x in loader:\n"
        '    with torch.autocast("cuda"):\n'
        "        loss = model(x).mean()\n"
        "    scaler.scale(loss).backward()\n"
        "    scaler.step(opt)\n"
        "    scaler.update()\n"
        "    opt.zero_grad()\n"
    )
