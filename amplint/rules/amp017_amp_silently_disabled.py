"""AMP017 amp-silently-disabled."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.api_names import (
    argument,
    chain_up,
    is_torch_module,
    literal_string,
    names_of,
)
from amplint.analysis.model import ModuleModel
from amplint.analysis.rewrites import legacy_call_args, prepend_device
from amplint.analysis.scopes import dotted_name
from amplint.analysis.symbols import Symbol
from amplint.analysis.values import AutocastRegion, ScalerInstance
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

#: devices whose autocast accepts only float16 and bfloat16 and disables itself otherwise
#: (CUDA takes any dtype; custom backends declare their own list).
_GENERIC_DEVICES = ("cpu", "mps", "xpu")
_FULL_PRECISION = {
    "torch.float32": "torch.float32",
    "torch.float": "torch.float",
    "torch.float64": "torch.float64",
    "torch.double": "torch.double",
}


class AmpSilentlyDisabled(Rule):
    code = "AMP017"
    # LIVE: an autocast only listed or compared is never entered (the evaluator resolves
    # no value through a table or a comparison).
    tokens = (("!autocast",), ("torch",))

    valid = (
        """
import torch
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = model(x)
with torch.autocast("cpu", dtype=torch.float16):
    loss = model(x)
scaler = torch.amp.GradScaler("cpu")
""",
        # CUDA autocast in float32 is not disabled; an explicitly disabled region is fine.
        """
import torch
with torch.autocast("cuda", dtype=torch.float32):
    loss = model(x)
with torch.autocast("cpu", dtype=torch.float32, enabled=False):
    loss = model(x)
""",
        # The dtype chosen at run time.
        """
import torch
dtype = torch.float32 if args.fp32 else torch.bfloat16
with torch.autocast("cpu", dtype=dtype):
    loss = model(x)
""",
        # A default GradScaler where the file also trains on CUDA.
        """
import torch
scaler = torch.amp.GradScaler()
model = model.cuda()
with torch.autocast("cpu", dtype=torch.float16):
    feats = cpu_encoder(x)
""",
        # The device is chosen at run time.
        """
import torch
device = "cuda" if torch.cuda.is_available() else "cpu"
scaler = torch.amp.GradScaler(device)
with torch.autocast(device_type=device, dtype=torch.float16):
    loss = model(x)
""",
        # bfloat16 CPU autocast needs no scaler: AMP014 talks about that one.
        """
import torch
scaler = torch.amp.GradScaler()
with torch.autocast("cpu"):
    loss = model(x)
""",
        # A disabled scaler.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
with torch.autocast("cpu", dtype=torch.float16):
    loss = model(x)
""",
    )
    invalid = (
        Invalid(
            """
import torch
for x, y in loader:
    with torch.autocast("cpu", dtype=torch.float32):
        loss = model(x)
""",
            line=4,
        ),
        Invalid(
            """
import torch
with torch.cpu.amp.autocast(dtype=torch.double):
    loss = model(x)
""",
            line=3,
        ),
        Invalid(
            """
import torch

def train(model, optimizer, loader, use_amp):
    scaler = torch.amp.GradScaler(enabled=use_amp)
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.float16, enabled=use_amp):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=5,
            fixed="""
import torch

def train(model, optimizer, loader, use_amp):
    scaler = torch.amp.GradScaler("cpu", enabled=use_amp)
    for x, y in loader:
        with torch.autocast("cpu", dtype=torch.float16, enabled=use_amp):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        Invalid(
            """
import torch
from torch import GradScaler
scaler = GradScaler("cuda", init_scale=1024)
with torch.autocast("cpu", dtype=torch.half):
    loss = model(x)
""",
            line=4,
            fixed="""
import torch
from torch import GradScaler
scaler = GradScaler("cpu", init_scale=1024)
with torch.autocast("cpu", dtype=torch.half):
    loss = model(x)
""",
        ),
        Invalid(
            """
import torch
scaler = torch.cuda.amp.GradScaler(65536.0)
with torch.autocast("cpu", dtype=torch.float16):
    loss = model(x)
""",
            line=3,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cpu", init_scale=65536.0)
with torch.autocast("cpu", dtype=torch.float16):
    loss = model(x)
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        regions: list[AutocastRegion] = []
        scalers: list[ScalerInstance] = []
        for call in model.index.calls:
            for value in model.evaluator.made_by(call):
                if isinstance(value, AutocastRegion):
                    regions.append(value)
                else:
                    scalers.append(value)
        for region in regions:
            self._check_dtype(context, region)
        if scalers and _cpu_only_float16(model, regions):
            for scaler in scalers:
                self._check_scaler(context, scaler)

    def _check_dtype(self, context: RuleContext, region: AutocastRegion) -> None:
        model = context.model
        if region.device not in _GENERIC_DEVICES or region.enabled is False:
            return
        if region.device_literal is not None and ":" in region.device_literal:
            return  # AMP008's finding first
        dtype_arg, _ = argument(region.call, "dtype", 1)
        if dtype_arg is None or model.is_dead(region.call):
            return
        names = model.evaluator.qualified_names(dtype_arg.value)
        written = sorted(names & set(_FULL_PRECISION))
        if not written or len(names) != len(written):
            return
        context.report(
            dtype_arg,
            f'autocast on "{region.device}" supports only float16 and bfloat16: with '
            f"`{written[0]}` PyTorch warns and disables autocast, so this region runs in full "
            "precision; drop autocast or use `torch.bfloat16`",
        )

    def _check_scaler(self, context: RuleContext, scaler: ScalerInstance) -> None:
        model = context.model
        if scaler.device != "cuda" or scaler.enabled is False or model.is_dead(scaler.call):
            return
        if scaler.symbol not in (Symbol.GRAD_SCALER, Symbol.CUDA_GRAD_SCALER):
            return
        if _mentions_cuda(model, exclude=scaler.call):
            return
        context.report(
            scaler.call,
            'this GradScaler is for "cuda" but the file\'s autocast runs on the CPU: without '
            'CUDA it disables itself and float16 gradients go unscaled; pass `"cpu"`',
            _name_cpu(model, scaler),
            whole_module=True,
        )


def _cpu_only_float16(model: ModuleModel, regions: list[AutocastRegion]) -> bool:
    """Every autocast of the file is on the CPU, and some may be float16."""
    live = [r for r in regions if r.may_be_enabled]
    return (
        bool(live)
        and all(r.device == "cpu" for r in regions)
        and any(r.dtype in ("float16", None) for r in live)
    )


def _mentions_cuda(model: ModuleModel, exclude: cst.CSTNode) -> bool:
    """Any sign in code that the file also uses CUDA: `.cuda()`, `torch.cuda`, "cuda:0"."""
    names = names_of(model)
    for attribute in names.attributes:
        if attribute.attr.value == "cuda" and exclude not in model.index.ancestors(attribute):
            return True
    for string in names.strings:
        if isinstance(string, cst.FormattedString):
            text = "".join(p.value for p in string.parts if isinstance(p, cst.FormattedStringText))
        else:
            text = literal_string(string) or ""
        if (text == "cuda" or text.startswith("cuda:")) and exclude not in model.index.ancestors(
            string
        ):
            return True
    return any(name.value == "cuda" for name in names.references)


def _name_cpu(model: ModuleModel, scaler: ScalerInstance) -> FixPlan | None:
    call = scaler.call
    if scaler.symbol is Symbol.GRAD_SCALER:
        device_arg, hidden = argument(call, "device", 0)
        if device_arg is None:
            if hidden:
                return None

            def add_device(updated: cst.CSTNode) -> cst.CSTNode:
                assert isinstance(updated, cst.Call)
                return updated.with_changes(
                    args=prepend_device(list(updated.args), "cpu", updated.whitespace_before_args)
                )

            return FixPlan('Create the GradScaler for "cpu"', {call: add_device})
        if literal_string(device_arg.value) != "cuda":
            return None
        return FixPlan(
            'Create the GradScaler for "cpu"', {device_arg.value: cst.SimpleString('"cpu"')}
        )
    # torch.cuda.amp.GradScaler(...) written through `torch`: rewrite to torch.amp.
    func = call.func
    if dotted_name(func) is None or not isinstance(func, cst.Attribute):
        return None
    root = func
    while isinstance(root, cst.Attribute):
        root = root.value
    if not isinstance(root, cst.Name) or not is_torch_module(model, root):
        return None
    if (
        dotted_name(func) != f"{root.value}.cuda.amp.GradScaler"
        or chain_up(model, root)[-1] is not func
    ):
        return None
    if legacy_call_args("scaler", "cpu", call.args) is None:
        return None
    new_func = cst.Attribute(
        cst.Attribute(cst.Name(root.value), cst.Name("amp")), cst.Name("GradScaler")
    )

    def rewrite(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.Call)
        return updated.with_changes(
            func=new_func,
            args=legacy_call_args("scaler", "cpu", updated.args, updated.whitespace_before_args),
        )

    return FixPlan('Create a `torch.amp.GradScaler` for "cpu"', {call: rewrite})
