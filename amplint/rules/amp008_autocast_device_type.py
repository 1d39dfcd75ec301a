"""AMP008 autocast-device-type."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.api_names import argument, literal_string
from amplint.analysis.model import ModuleModel
from amplint.analysis.rewrites import prepend_device
from amplint.analysis.scopes import BindingKind
from amplint.analysis.symbols import Symbol
from amplint.analysis.values import AutocastRegion, SymbolValue
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

_DEVICE_TYPE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")
#: receivers whose ``.device`` is usually a configured string, not a torch.device.
_CONFIG_NAME = re.compile(
    r"(^|_)(args?|opts?|options|cfg|config|conf|hparams|hp|settings|flags|params|self|cls)$",
    re.IGNORECASE,
)
_DEVICE_CALL = ("torch.device",)


class AutocastDeviceType(Rule):
    code = "AMP008"
    # LIVE: an autocast only listed or compared is never entered (the evaluator resolves
    # no value through a table or a comparison).
    tokens = (("!autocast",), ("torch",))

    valid = (
        """
import torch
with torch.autocast("cuda", dtype=torch.float16):
    loss = model(x)
with torch.amp.autocast(device_type="cpu"):
    loss = model(x)
""",
        # Device type derived from a device, or from a variable of unknown origin.
        """
import torch
device = torch.device(args.device)
with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
    loss = model(x)
with torch.autocast(str(device).split(":")[0]):
    loss = model(x)
""",
        """
import torch

def train(model, loader, device_type, args):
    for x, y in loader:
        with torch.autocast(device_type, enabled=args.amp):
            loss = model(x)
        with torch.autocast(device_type=args.device):
            loss = model(x)
""",
        # nanoGPT: the type computed from a device string.
        """
import torch
device = "cuda:0"
device_type = "cuda" if "cuda" in device else "cpu"
ctx = torch.amp.autocast(device_type=device_type, dtype=torch.bfloat16)
""",
        # Legacy autocast takes no device type (AMP007's business).
        """
from torch.cuda.amp import autocast
with autocast():
    loss = model(x)
""",
        # A partial that leaves the device to the call site.
        """
import functools, torch
amp = functools.partial(torch.autocast, dtype=torch.bfloat16)
with amp("cuda"):
    loss = model(x)
""",
        # A local autocast with its own defaults.
        """
from contextlib import contextmanager

@contextmanager
def autocast(device_type="cuda"):
    yield

with autocast():
    pass
""",
        # Arguments forwarded with **kwargs.
        """
import torch
def amp_ctx(**kwargs):
    return torch.autocast(**kwargs)
""",
        # A config's device is often a string: not reported.
        """
import torch
with torch.autocast(cfg.device, dtype=torch.bfloat16):
    loss = model(x)
""",
    )
    invalid = (
        Invalid(
            """
import torch
with torch.autocast("cuda:{}".format(rank), dtype=torch.bfloat16):
    out = model(x)
""",
            line=3,
            fixed="""
import torch
with torch.autocast("cuda", dtype=torch.bfloat16):
    out = model(x)
""",
        ),
        Invalid(
            """
import torch
with torch.autocast(device_type="cuda:0", dtype=torch.float16):
    loss = model(x)
""",
            line=3,
            fixed="""
import torch
with torch.autocast(device_type="cuda", dtype=torch.float16):
    loss = model(x)
""",
        ),
        Invalid(
            """
import torch

def train(rank, model, loader):
    for x, y in loader:
        with torch.amp.autocast(f"cuda:{rank}", dtype=torch.bfloat16):
            loss = model(x)
""",
            line=6,
            fixed="""
import torch

def train(rank, model, loader):
    for x, y in loader:
        with torch.amp.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x)
""",
        ),
        Invalid(
            """
import torch
from torch import autocast
with autocast(torch.device("cuda", 0)):
    loss = model(x)
""",
            line=4,
            fixed="""
import torch
from torch import autocast
with autocast("cuda"):
    loss = model(x)
""",
        ),
        Invalid(
            """
import torch
with torch.autocast(torch.device(args.device)):
    loss = model(x)
""",
            line=3,
            fixed="""
import torch
with torch.autocast(torch.device(args.device).type):
    loss = model(x)
""",
        ),
        # A variable that holds a device with an index.
        Invalid(
            """
import torch
device = f"cuda:{local_rank}"
model.to(device)
with torch.autocast(device_type=device, dtype=torch.bfloat16):
    loss = model(x)
""",
            line=5,
            fixed="""
import torch
device = f"cuda:{local_rank}"
model.to(device)
with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
    loss = model(x)
""",
        ),
        # A torch.device variable and a tensor's device: `.type` (unsafe).
        Invalid(
            """
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
with torch.autocast(device):
    loss = model(x)
""",
            line=4,
            unsafe=True,
            fixed="""
import torch
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
with torch.autocast(device.type):
    loss = model(x)
""",
        ),
        Invalid(
            """
import torch

def forward_amp(model, images):
    with torch.autocast(device_type=images.device, dtype=torch.bfloat16):
        return model(images)
""",
            line=5,
            unsafe=True,
            fixed="""
import torch

def forward_amp(model, images):
    with torch.autocast(device_type=images.device.type, dtype=torch.bfloat16):
        return model(images)
""",
        ),
        # Missing device type, inferred from the module's other autocasts (unsafe).
        Invalid(
            """
import torch
with torch.autocast(dtype=torch.bfloat16):
    loss = model(x)
with torch.autocast("cuda", enabled=False):
    loss = loss.float()
""",
            line=3,
            unsafe=True,
            fixed="""
import torch
with torch.autocast("cuda", dtype=torch.bfloat16):
    loss = model(x)
with torch.autocast("cuda", enabled=False):
    loss = loss.float()
""",
        ),
        # Missing and nothing to infer it from: no fix.
        Invalid(
            """
import torch

@torch.autocast()
def forward(x):
    return model(x)
""",
            line=4,
        ),
        # Through functools.partial.
        Invalid(
            """
import functools, torch
amp_autocast = functools.partial(torch.autocast, device_type="cuda:1", dtype=torch.float16)
with amp_autocast():
    loss = model(x)
""",
            line=3,
            fixed="""
import functools, torch
amp_autocast = functools.partial(torch.autocast, device_type="cuda", dtype=torch.float16)
with amp_autocast():
    loss = model(x)
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        evaluator = model.evaluator
        for call in model.index.calls:
            if evaluator.is_symbol(call.func, Symbol.AUTOCAST):
                self._check_call(context, call, call.args, offset=0)
            elif evaluator.is_symbol(call.func, Symbol.PARTIAL) and call.args:
                target = evaluator.evaluate(call.args[0].value)
                if call.args[0].keyword is None and any(
                    isinstance(v, SymbolValue) and v.symbol is Symbol.AUTOCAST for v in target
                ):
                    self._check_call(context, call, call.args[1:], offset=1)

    def _check_call(
        self, context: RuleContext, call: cst.Call, args: tuple[cst.Arg, ...], offset: int
    ) -> None:
        model = context.model
        if model.is_dead(call):
            return
        view = call.with_changes(args=args)
        arg, hidden = argument(view, "device_type", 0)
        if arg is None:
            if not hidden and offset == 0:
                context.report(
                    call,
                    'autocast needs a device type (`"cuda"`, `"cpu"`, ...): without one it '
                    "raises `TypeError`",
                    _missing_fix(model, call),
                )
            return
        finding = _bad_device(model, arg.value)
        if finding is None:
            return
        message, replacement, safe = finding
        fix = None
        if replacement is not None:
            fix = FixPlan(
                "Pass the device type",
                {arg.value: replacement},
                "safe" if safe else "unsafe",
            )
        context.report(call, message, fix)


def _device_type_prefix(node: cst.BaseExpression) -> str | None:
    """``"cuda"`` for ``"cuda:0"``, ``f"cuda:{rank}"``, ``"cuda:" + str(rank)``,
    ``"cuda:%d" % rank``, ``"cuda:{}".format(rank)``."""
    text = literal_string(node)
    if (
        text is None
        and isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value == "format"
    ):
        text = literal_string(node.func.value)
    if text is None and isinstance(node, cst.FormattedString) and node.parts:
        first = node.parts[0]
        text = first.value if isinstance(first, cst.FormattedStringText) else None
    if (
        text is None
        and isinstance(node, cst.BinaryOperation)
        and isinstance(node.operator, (cst.Add, cst.Modulo))
    ):
        text = literal_string(node.left)
    if text is None:
        return None
    match = _DEVICE_TYPE.match(text)
    return match.group(1) if match else None


def _torch_device_call(model: ModuleModel, node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Call) and bool(
        model.evaluator.qualified_names(node.func) & set(_DEVICE_CALL)
    )


def _string(value: str) -> cst.SimpleString:
    return cst.SimpleString(f'"{value}"')


def _bad_device(
    model: ModuleModel, node: cst.BaseExpression
) -> tuple[str, cst.BaseExpression | None, bool] | None:
    """(message, replacement, safe) when ``node`` is not a device type."""
    prefix = _device_type_prefix(node)
    if prefix is not None:
        return (
            f'autocast takes a device type, not a device with an index: use `"{prefix}"`',
            _string(prefix),
            True,
        )
    if _torch_device_call(model, node):
        assert isinstance(node, cst.Call)
        first = node.args[0].value if node.args and node.args[0].keyword is None else None
        literal = literal_string(first) if first is not None else None
        message = (
            "autocast takes the device type as a string, not a `torch.device`: it raises "
            "`ValueError`"
        )
        if literal is not None:
            return message, _string(literal.split(":")[0]), True
        return message, cst.Attribute(node, cst.Name("type")), True
    if isinstance(node, cst.Name):
        return _bad_variable(model, node)
    if isinstance(node, cst.Attribute) and node.attr.value == "device":
        owner = node.value
        last = owner.attr.value if isinstance(owner, cst.Attribute) else None
        if isinstance(owner, cst.Name):
            last = owner.value
        if last is not None and _CONFIG_NAME.search(last):
            return None
        if isinstance(owner, (cst.Name, cst.Attribute, cst.Call, cst.Subscript)):
            return (
                f"`{model.snippet(node)}` is a `torch.device`; autocast takes its "
                "type as a string (`.type`), otherwise it raises `ValueError`",
                cst.Attribute(node, cst.Name("type")),
                False,
            )
    return None


def _bad_variable(
    model: ModuleModel, node: cst.Name
) -> tuple[str, cst.BaseExpression | None, bool] | None:
    bindings = model.index.scope_of(node).lookup(node.value)
    if not bindings or any(b.kind is not BindingKind.ASSIGN or b.node is None for b in bindings):
        return None
    values = [b.node for b in bindings]
    prefixes = {_device_type_prefix(v) for v in values}  # type: ignore[arg-type]
    if len(prefixes) == 1 and None not in prefixes:
        prefix = prefixes.pop()
        return (
            f"`{node.value}` holds a device with an index; autocast takes the device type "
            f'`"{prefix}"`',
            _string(prefix),  # type: ignore[arg-type]
            True,
        )
    if all(_torch_device_call(model, v) for v in values):  # type: ignore[arg-type]
        return (
            f"`{node.value}` is a `torch.device`; autocast takes its type as a string "
            f"(`{node.value}.type`), otherwise it raises `ValueError`",
            cst.Attribute(cst.Name(node.value), cst.Name("type")),
            False,
        )
    return None


def _missing_fix(model: ModuleModel, call: cst.Call) -> FixPlan | None:
    if any(arg.keyword is None for arg in call.args):
        return None
    devices = set()
    for other in model.index.calls:
        if other is call:
            continue
        for value in model.evaluator.evaluate(other):
            if isinstance(value, AutocastRegion) and value.call is other:
                devices.add(value.device)
    if len(devices) != 1 or None in devices:
        return None
    device = devices.pop()
    assert device is not None

    def add_device(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.Call)
        return updated.with_changes(
            args=prepend_device(list(updated.args), device, updated.whitespace_before_args)
        )

    return FixPlan(f'Pass the device type `"{device}"`', {call: add_device}, "unsafe")
