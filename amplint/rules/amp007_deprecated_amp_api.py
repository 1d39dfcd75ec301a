"""AMP007 deprecated-amp-api."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from amplint.analysis.api_names import (
    DEPRECATED,
    LEGACY_MODULES,
    Deprecated,
    ImportSite,
    chain_up,
    defining_scope,
    import_site,
    in_compatibility_try,
    is_guarded,
    names_of,
    torch_name,
)
from amplint.analysis.model import ModuleModel
from amplint.analysis.rewrites import (
    LEGACY_AUTOCAST_DTYPE,
    keyword_arg,
    legacy_call_args,
    with_keyword,
)
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext

_DEPRECATED_FUNCTIONS = tuple(
    sorted(
        {spec.legacy.rsplit(".", 1)[1] for spec in DEPRECATED.values()}
        - {"autocast", "GradScaler", "custom_fwd", "custom_bwd"}
    )
)

_FIX_MESSAGE = "Rewrite deprecated AMP APIs to `torch.amp` with an explicit device type"


@dataclass(eq=False)
class _Ref:
    expr: cst.BaseExpression
    spec: Deprecated
    root: cst.Name
    #: "torch": ``torch.cuda.amp.X``; "module": ``amp.X`` with ``amp`` a legacy module
    #: import; "object": a name imported from a legacy module; "other": anything else.
    form: str
    site: ImportSite | None
    replacements: dict[cst.CSTNode, Replacement] | None = None
    unsafe: bool = False
    reported: bool = True


@dataclass(eq=False)
class _Unit:
    """References that must be fixed together: all uses of one import statement."""

    refs: list[_Ref] = field(default_factory=list)
    fixable: bool = True
    replacements: dict[cst.CSTNode, Replacement] = field(default_factory=dict)

    @property
    def unsafe(self) -> bool:
        return any(ref.unsafe for ref in self.refs)


class DeprecatedAmpApi(Rule):
    code = "AMP007"
    # A deprecated function (``get_autocast_gpu_dtype``...) by name, or ``amp`` together with
    # ``cuda`` or ``cpu``: no import or attribute reaches ``torch.cuda.amp`` or
    # ``torch.cpu.amp`` without naming the device module.
    tokens = (
        # LIVE: a deprecated object only listed or compared is never built (_only_compared);
        # ``torch.amp`` is the current module (the deprecated ones hang off ``cuda``, ``cpu``
        # or an alias of one), so an ``amp`` only ever written so says nothing.
        ("!amp/torch", *(f"!{word}" for word in _DEPRECATED_FUNCTIONS)),
        ("cuda", "cpu", *_DEPRECATED_FUNCTIONS),
        ("torch",),
    )

    valid = (
        # A shim that backfills the old name on a backend without it defines it, uses nothing.
        """
import torch
def install_shims(dtype_of):
    torch.get_autocast_gpu_dtype = dtype_of
    torch.cuda.amp.autocast = torch.amp.autocast
""",
        # The same name imported by torch version: the legacy import is the old torch's.
        """
import torch
if torch.__version__ >= "2.4":
    from torch.amp import GradScaler
else:
    from torch.cuda.amp import GradScaler

scaler = GradScaler("cuda")
""",
        # The current API.
        """
import torch
scaler = torch.amp.GradScaler("cuda")
with torch.autocast("cuda", dtype=torch.float16):
    loss = model(x)
dtype = torch.get_autocast_dtype("cuda")
""",
        # Version fallback: try the new API, fall back to the old one.
        """
try:
    from torch.amp import GradScaler
except ImportError:
    from torch.cuda.amp import GradScaler
scaler = GradScaler(enabled=args.fp16)
""",
        # Version check on the torch version.
        """
import torch
if torch.__version__ < "2.3":
    scaler = torch.cuda.amp.GradScaler()
else:
    scaler = torch.amp.GradScaler("cuda")
""",
        """
import torch
from packaging import version
TORCH_GE_2_4 = version.parse(torch.__version__) >= version.parse("2.4")
autocast = torch.amp.autocast if TORCH_GE_2_4 else torch.cuda.amp.autocast
""",
        """
import torch
if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
    make_scaler = lambda: torch.amp.GradScaler("cuda")
else:
    make_scaler = torch.cuda.amp.GradScaler
""",
        # Strings, comments and docstrings.
        '''
"""Uses torch.cuda.amp.autocast() in older releases."""
import torch
# with torch.cuda.amp.autocast():
LEGACY = "torch.cuda.amp.GradScaler"
with torch.autocast("cuda"):
    loss = model(x)
''',
        # apex's amp is not torch's.
        """
from apex import amp
model, optimizer = amp.initialize(model, optimizer, opt_level="O1")
with amp.scale_loss(loss, optimizer) as scaled:
    scaled.backward()
""",
        # A local object named like the legacy module.
        """
import torch
class Cuda:
    amp = None
torch_like = Cuda()
torch_like.amp.autocast()
""",
        # Not deprecated: is_autocast_enabled() and the still-supported helper.
        """
import torch
from torch.cuda.amp.common import amp_definitely_not_available
if torch.is_autocast_enabled() and not amp_definitely_not_available():
    pass
""",
        # Dead code is not reported.
        """
import torch
if False:
    with torch.cuda.amp.autocast():
        loss = model(x)
""",
        # Lightning-style private version flag, timm-style TypeError fallback.
        """
import torch
from lightning_utilities import compare_version
_TORCH_GREATER_EQUAL_2_4 = compare_version("torch", operator.ge, "2.4.0")
scaler = torch.amp.GradScaler("cuda") if _TORCH_GREATER_EQUAL_2_4 else torch.cuda.amp.GradScaler()

def is_autocast_enabled(device="cuda"):
    try:
        return torch.is_autocast_enabled(device)
    except TypeError:
        return torch.is_autocast_cpu_enabled() if device == "cpu" else torch.is_autocast_enabled()
""",
        # The old-torch fallback after an early return on the new API.
        """
import torch
def autocast_dtype(device_type):
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_gpu_dtype()
""",
    )
    invalid = (
        # One name, imported in the branches of a device test (mmengine): on CUDA it is
        # the legacy class. No fix: the other branch's class takes other arguments.
        Invalid(
            """
from mylib import is_npu_available
if is_npu_available():
    from torch.npu.amp import GradScaler
else:
    from torch.cuda.amp import GradScaler

scaler = GradScaler(init_scale=1024)
""",
            line=8,
        ),
        # A handler that cleans up and raises again is no fallback of an older torch's: the
        # `try` body is fixed (icefall's training steps).
        Invalid(
            """
import torch
def train(model, optimizer, scaler, batch, save_bad_model):
    try:
        with torch.cuda.amp.autocast(enabled=True):
            loss = model(batch)
        scaler.scale(loss).backward()
    except:
        save_bad_model()
        raise
""",
            line=5,
            fixed="""
import torch
def train(model, optimizer, scaler, batch, save_bad_model):
    try:
        with torch.amp.autocast("cuda", enabled=True, dtype=torch.float16):
            loss = model(batch)
        scaler.scale(loss).backward()
    except:
        save_bad_model()
        raise
""",
        ),
        Invalid(
            """
import torch
scaler = torch.cuda.amp.GradScaler()
for x, y in loader:
    with torch.cuda.amp.autocast(args.amp):
        loss = model(x)
""",
            line=3,
            count=2,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.amp.autocast("cuda", enabled=args.amp, dtype=torch.float16):
        loss = model(x)
""",
        ),
        # Legacy positional order: (enabled, dtype, cache_enabled).
        Invalid(
            """
import torch as th
with th.cuda.amp.autocast(True, th.bfloat16, cache_enabled=False):
    y = net(x)
""",
            line=3,
            fixed="""
import torch as th
with th.amp.autocast("cuda", enabled=True, dtype=th.bfloat16, cache_enabled=False):
    y = net(x)
""",
        ),
        Invalid(
            """
import torch
scaler = torch.cuda.amp.GradScaler(
    2.0**14,
    2.0,
    0.5,
    1000,
    args.fp16,
)
""",
            line=3,
            fixed="""
import torch
scaler = torch.amp.GradScaler(
    "cuda",
    init_scale=2.0**14,
    growth_factor=2.0,
    backoff_factor=0.5,
    growth_interval=1000,
    enabled=args.fp16,
)
""",
        ),
        # from-imports with aliases: the import and every use are rewritten together.
        Invalid(
            """
from torch.cuda.amp import GradScaler, autocast as ac

class Trainer:
    def __init__(self, model, fp16):
        self.model = model
        self.scaler = GradScaler(enabled=fp16)

    def forward(self, x):
        with ac(dtype=self.dtype):
            return self.model(x)

    def is_amp(self):
        return isinstance(self.scaler, GradScaler)
""",
            line=7,
            count=3,
            fixed="""
from torch.amp import GradScaler, autocast as ac

class Trainer:
    def __init__(self, model, fp16):
        self.model = model
        self.scaler = GradScaler("cuda", enabled=fp16)

    def forward(self, x):
        with ac("cuda", dtype=self.dtype):
            return self.model(x)

    def is_amp(self):
        return isinstance(self.scaler, GradScaler)
""",
        ),
        # custom_fwd / custom_bwd need device_type=.
        Invalid(
            """
import torch
from torch.cuda.amp import custom_bwd, custom_fwd

class Exp(torch.autograd.Function):
    @staticmethod
    @custom_fwd(cast_inputs=torch.float32)
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @custom_bwd
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y
""",
            line=7,
            count=2,
            fixed="""
import torch
from torch.amp import custom_bwd, custom_fwd

class Exp(torch.autograd.Function):
    @staticmethod
    @custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y
""",
        ),
        Invalid(
            """
import torch

class Square(torch.autograd.Function):
    @staticmethod
    @torch.cuda.amp.custom_fwd
    def forward(ctx, x):
        return x * x
""",
            line=6,
            fixed="""
import torch

class Square(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x):
        return x * x
""",
        ),
        # A module alias of torch.cuda.amp, and no name for torch: the new autocast would
        # take an enclosing region's dtype where the legacy one took float16 (unsafe).
        Invalid(
            """
from torch.cuda import amp

scaler = amp.GradScaler()
with amp.autocast():
    out = model(x)
""",
            line=4,
            count=2,
            fixed="""
from torch import amp

scaler = amp.GradScaler("cuda")
with amp.autocast("cuda"):
    out = model(x)
""",
            unsafe=True,
        ),
        # torch.cpu.amp and the global autocast-state functions.
        Invalid(
            """
import torch

def run(model, x):
    if torch.is_autocast_cpu_enabled():
        print(torch.get_autocast_gpu_dtype())
    torch.set_autocast_cpu_dtype(torch.bfloat16)
    with torch.cpu.amp.autocast():
        return model(x)
""",
            line=5,
            count=4,
            fixed="""
import torch

def run(model, x):
    if torch.is_autocast_enabled("cpu"):
        print(torch.get_autocast_dtype("cuda"))
    torch.set_autocast_dtype("cpu", torch.bfloat16)
    with torch.amp.autocast("cpu", dtype=torch.bfloat16):
        return model(x)
""",
        ),
        # isinstance with a tuple; the annotation (never run) is rewritten with it.
        Invalid(
            """
import torch
from typing import Optional

def step(scaler: Optional[torch.cuda.amp.GradScaler], loss):
    if isinstance(scaler, (torch.cuda.amp.GradScaler, MyScaler)):
        scaler.scale(loss).backward()
""",
            line=6,
            fixed="""
import torch
from typing import Optional

def step(scaler: Optional[torch.amp.GradScaler], loss):
    if isinstance(scaler, (torch.amp.GradScaler, MyScaler)):
        scaler.scale(loss).backward()
""",
        ),
        # A subclass: the new base takes a device first, so the fix is unsafe.
        Invalid(
            """
import torch

class LoggingScaler(torch.cuda.amp.GradScaler):
    def update(self, new_scale=None):
        super().update(new_scale)
        log(self.get_scale())

scaler = LoggingScaler(init_scale=1024.0)
""",
            line=4,
            unsafe=True,
            fixed="""
import torch

class LoggingScaler(torch.amp.GradScaler):
    def update(self, new_scale=None):
        super().update(new_scale)
        log(self.get_scale())

scaler = LoggingScaler(init_scale=1024.0)
""",
        ),
        # The legacy name is passed around as a value: reported, no fix for that import.
        Invalid(
            """
import functools
from torch.cuda.amp import autocast

amp_ctx = functools.partial(autocast, enabled=True)
with autocast():
    out = model(x)
""",
            line=5,
            count=2,
        ),
        # A subclass of the legacy autocast: no fix.
        Invalid(
            """
import torch

class fp16_autocast(torch.cuda.amp.autocast):
    pass
""",
            line=4,
        ),
        # A module alias also used for a member that torch.amp lacks: no fix.
        Invalid(
            """
import torch.cuda.amp as cuda_amp

if not cuda_amp.common.amp_definitely_not_available():
    scaler = cuda_amp.GradScaler()
""",
            line=5,
        ),
        Invalid(
            """
import torch.cuda.amp as cuda_amp

scaler = cuda_amp.GradScaler(enabled=True)
""",
            line=4,
            fixed="""
import torch.amp as cuda_amp

scaler = cuda_amp.GradScaler("cuda", enabled=True)
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        refs, blocked = _references(model)
        if not refs:
            return
        units = _units(model, refs, blocked)
        safe: dict[cst.CSTNode, Replacement] = {}
        for unit in units.values():
            if unit.fixable and not unit.unsafe:
                safe.update(unit.replacements)
        for unit in units.values():
            for ref in unit.refs:
                if not ref.reported:
                    continue
                fix = None
                if unit.fixable and unit.unsafe:
                    fix = FixPlan(_FIX_MESSAGE, {**safe, **unit.replacements}, "unsafe")
                elif unit.fixable:
                    fix = FixPlan(_FIX_MESSAGE, dict(safe))
                context.report(ref.expr, _message(model, ref), fix)


def _message(model: ModuleModel, ref: _Ref) -> str:
    spec = ref.spec
    parent = model.index.parent(ref.expr)
    if not (isinstance(parent, cst.Call) and parent.func is ref.expr) and spec.kind in (
        "autocast",
        "scaler",
    ):
        # The class itself (a type check, `@delegates(GradScaler)`): no call to rewrite.
        return (
            f"`{spec.legacy}` is deprecated; use `{spec.new_path}`, whose constructor takes "
            f'the device type ("{spec.device}") first'
        )
    text = f"`{spec.legacy}` is deprecated; use `{spec.replacement}`"
    if spec.kind in ("autocast", "scaler"):
        text += " and pass the other arguments by keyword"
    return text


def _references(model: ModuleModel) -> tuple[list[_Ref], set[ImportSite]]:
    """Deprecated references, and import sites with a use that the fix cannot rewrite."""
    refs: list[_Ref] = []
    blocked: set[ImportSite] = set()
    for name in names_of(model).references:
        site = import_site(model, name)
        if site is None:
            dispatched = _dispatched_legacy_import(model, name)
            if dispatched is not None:
                refs.append(dispatched)
            continue
        chain = chain_up(model, name)
        qualified = site.qualified
        found = None
        for depth, expr in enumerate(chain):
            if depth:
                qualified = f"{qualified}.{expr.attr.value}"  # type: ignore[attr-defined]
            spec = DEPRECATED.get(qualified)
            if spec is not None:
                found = (depth, expr, spec)
                break
        if found is None:
            if site.qualified in LEGACY_MODULES:
                blocked.add(site)  # `amp.common...` or the module passed around
            continue
        depth, expr, spec = found
        if depth and _assigned(model, expr):
            continue  # `torch.get_autocast_gpu_dtype = shim` defines the name, uses nothing
        if depth == 0:
            form = "object"
        elif site.qualified == "torch":
            form = "torch"
        elif site.qualified in LEGACY_MODULES and depth == 1:
            form = "module"
        else:
            form = "other"
        ref = _Ref(expr, spec, name, form, site if form != "torch" else None)
        guarded = is_guarded(model, expr) or (
            ref.site is not None and is_guarded(model, ref.site.statement)
        )
        if guarded:
            if ref.site is not None:
                blocked.add(ref.site)
            continue
        if ref.site is not None and in_compatibility_try(model, ref.site.statement):
            blocked.add(ref.site)  # reported, but an older torch's fallback must stay as is
        if model.is_dead(expr):
            if form == "torch":
                continue
            ref.reported = False
        else:
            # An annotation never runs, and an object only compared or listed (a table of
            # context managers that a tracer recognises) is never built: neither warns, and
            # neither is a finding on its own; an annotation is rewritten with the real uses.
            ref.reported = not (_in_annotation(model, expr) or _only_compared(model, expr))
        _plan_reference(model, ref)
        if in_compatibility_try(model, expr):
            ref.replacements = None  # the fallback was written for this spelling
        refs.append(ref)
    return refs, blocked


def _assigned(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    """Whether the attribute is a target: assigned (a compatibility shim backfills the old
    name on a backend that lacks it, sd-scripts' IPEX hijacks) or deleted."""
    parent = model.index.parent(expr)
    if isinstance(parent, (cst.AssignTarget, cst.Del)):
        return True
    return isinstance(parent, (cst.AnnAssign, cst.AugAssign)) and parent.target is expr


def _dispatched_legacy_import(model: ModuleModel, name: cst.Name) -> _Ref | None:
    """A name that imports bind in the branches of a device test (mmengine's ``if
    is_npu_available(): from torch.npu.amp import GradScaler`` / ``else: from torch.cuda.amp
    import GradScaler``): on CUDA it is the legacy object. Reported, without a fix: the
    other branch's object takes other arguments. None when no single binding is legacy, or
    a version test or compatibility block guards it (that is a fallback, not a use)."""
    scope = model.index.scope_of(name)
    bindings = scope.lookup(name.value)
    if len(bindings) < 2 or any(b.kind is not BindingKind.IMPORT for b in bindings):
        return None
    owner = defining_scope(scope, name.value)
    sites = names_of(model).imports.get((id(owner), name.value), []) if owner else []
    if len(sites) != len(bindings):
        return None
    legacy = [s for s in sites if s.qualified in DEPRECATED]
    if len(legacy) != 1 or len({s.qualified for s in sites}) != len(sites):
        return None
    (site,) = legacy
    if is_guarded(model, site.statement) or in_compatibility_try(model, site.statement):
        return None
    if not _under_device_test(model, site.statement):
        return None  # `if _HAS_NEW_SCALER:` may be a version test in disguise: in doubt
    parent = model.index.parent(name)
    if not isinstance(parent, cst.Call) or parent.func is not name or model.is_dead(name):
        return None  # only a call builds it, and warns
    return _Ref(name, DEPRECATED[site.qualified], name, "object", site, replacements=None)


_DEVICE_TEST = re.compile(r"npu|mlu|xpu|hpu|musa|ipu|xla|gcu|dipu", re.IGNORECASE)
_VERSION_WORDS = re.compile(r"version|torch_\d|torch\d|has_|_has", re.IGNORECASE)


def _under_device_test(model: ModuleModel, statement: cst.CSTNode) -> bool:
    """Whether ``statement`` sits in a branch of ``if``s that test for another accelerator
    (``is_npu_available()``) and nothing that looks like torch's version."""
    tests = [
        model.module.code_for_node(ancestor.test)
        for ancestor in model.index.ancestors(statement)
        if isinstance(ancestor, cst.If)
    ]
    return (
        bool(tests)
        and any(_DEVICE_TEST.search(test) for test in tests)
        and not any(_VERSION_WORDS.search(test) for test in tests)
    )


def _new_reference(ref: _Ref) -> cst.BaseExpression | None:
    """What the reference becomes (None: it stays as written, its import changes)."""
    spec = ref.spec
    if ref.form == "torch":
        root = cst.Name(ref.root.value)
        if spec.kind == "function":
            return cst.Attribute(root, cst.Name(spec.new_name))
        return cst.Attribute(cst.Attribute(root, cst.Name("amp")), cst.Name(spec.new_name))
    if (
        ref.form == "object"
        and spec.kind == "function"
        and ref.site is not None
        and ref.site.alias.asname is None
    ):
        return cst.Name(spec.new_name)
    return None


def _plan_reference(model: ModuleModel, ref: _Ref) -> None:
    """Fill in the replacements for one reference, or leave them None (no fix)."""
    if ref.form == "other":
        return
    expr, spec = ref.expr, ref.spec
    new = _new_reference(ref)
    parent = model.index.parent(expr)
    if isinstance(parent, cst.Call) and parent.func is expr:
        if legacy_call_args(spec.kind, spec.device, parent.args) is None:
            return
        dtype = _legacy_dtype(model, ref, parent)

        def rewrite_call(updated: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(updated, cst.Call)
            opening = updated.whitespace_before_args
            args = legacy_call_args(spec.kind, spec.device, updated.args, opening)
            assert args is not None
            if dtype is not None:
                args = with_keyword(args, "dtype", dtype, opening)
            return updated.with_changes(func=new or updated.func, args=args)

        ref.replacements = {parent: rewrite_call}
        return
    if isinstance(parent, cst.Decorator) and parent.decorator is expr:
        if spec.kind in ("custom_fwd", "custom_bwd"):
            device = keyword_arg("device_type", cst.SimpleString(f'"{spec.device}"'))
            ref.replacements = {expr: cst.Call(func=new or expr, args=[device])}
        return
    if spec.kind not in ("autocast", "scaler"):
        return
    base_of = _class_base_of(model, expr)
    if base_of is not None:
        if spec.kind == "scaler" and _subclass_rewritable(model, base_of):
            ref.replacements = {expr: new} if new is not None else {}
            ref.unsafe = True
        return
    if _in_type_check(model, expr) or _in_annotation(model, expr):
        ref.replacements = {expr: new} if new is not None else {}


def _legacy_dtype(model: ModuleModel, ref: _Ref, call: cst.Call) -> cst.BaseExpression | None:
    """The dtype a legacy autocast call that names none must now spell out: the legacy class
    passes float16 (``torch.cuda.amp``) or bfloat16 (``torch.cpu.amp``), the new one reads
    the thread's current autocast dtype, an enclosing region's (bfloat16 under accelerate's
    bf16 autocast). None when the call names its dtype or nothing needs adding; a call whose
    ``**kwargs`` may hold it, or a module with no name for torch, gets an unsafe fix."""
    if ref.spec.kind != "autocast":
        return None
    if any(arg.keyword is not None and arg.keyword.value == "dtype" for arg in call.args):
        return None
    if len([arg for arg in call.args if arg.keyword is None and not arg.star]) >= 2:
        return None  # (enabled, dtype, ...) given by position
    torch = ref.root.value if ref.form == "torch" else torch_name(model)
    if torch is None or any(arg.star == "**" for arg in call.args):
        ref.unsafe = True
        return None
    dtype = LEGACY_AUTOCAST_DTYPE[ref.spec.device]
    return cst.Attribute(cst.Name(torch), cst.Name(dtype))


def _class_base_of(model: ModuleModel, expr: cst.BaseExpression) -> cst.ClassDef | None:
    parent = model.index.parent(expr)
    owner = model.index.parent(parent) if isinstance(parent, cst.Arg) else None
    if isinstance(owner, cst.ClassDef) and parent in owner.bases:
        return owner
    return None


def _subclass_rewritable(model: ModuleModel, node: cst.ClassDef) -> bool:
    """No call in this module passes the legacy positional arguments to the subclass."""
    info = model.index.classes.get(node)
    if info is None:
        return False
    init = info.methods.get("__init__")
    if init is not None:
        for call in model.index.calls:
            func = call.func
            if (
                isinstance(func, cst.Attribute)
                and func.attr.value == "__init__"
                and isinstance(func.value, cst.Call)
                and dotted_name(func.value.func) == "super"
                and init in model.index.ancestors(call)
                and any(a.keyword is None for a in call.args)
            ):
                return False
    for call in model.index.calls:
        if isinstance(call.func, cst.Name) and call.func.value == node.name.value:
            bindings = model.index.scope_of(call).lookup(call.func.value)
            if any(b.kind is BindingKind.CLASS and b.node is node for b in bindings) and any(
                a.keyword is None for a in call.args
            ):
                return False
    return True


def _in_type_check(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    node: cst.CSTNode = expr
    parent = model.index.parent(node)
    if isinstance(parent, cst.Element):
        container = model.index.parent(parent)
        if not isinstance(container, cst.Tuple):
            return False
        node, parent = container, model.index.parent(container)
    if not isinstance(parent, cst.Arg) or parent.value is not node:
        return False
    call = model.index.parent(parent)
    return (
        isinstance(call, cst.Call)
        and isinstance(call.func, cst.Name)
        and call.func.value in ("isinstance", "issubclass")
        and not model.index.scope_of(call).lookup(call.func.value)
        and len(call.args) == 2
        and call.args[1] is parent
    )


def _only_compared(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    """``x in (legacy, ...)``, ``x is legacy``, ``{legacy: ...}``: the object as a value to
    compare or look up, never called (``isinstance`` checks are type checks, not this).
    So is an attribute of it read there (``(legacy.__name__, ...)``): the whole chain is the
    value. The prefilter relies on this (AMP007's words are ``"!amp"``...)."""
    if _in_type_check(model, expr):
        return False
    parent = model.index.parent(expr)
    while isinstance(parent, cst.Attribute) and parent.value is expr:
        expr, parent = parent, model.index.parent(parent)
    if isinstance(parent, cst.Element):
        # A table of objects (also one handed to ``dict.fromkeys`` or ``set``) is data.
        return isinstance(model.index.parent(parent), (cst.Tuple, cst.List, cst.Set))
    if isinstance(parent, cst.ComparisonTarget) and parent.comparator is expr:
        return True
    if isinstance(parent, cst.Comparison) and parent.left is expr:
        return True
    return isinstance(parent, cst.DictElement) and parent.key is expr


def _in_annotation(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    for ancestor in model.index.ancestors(expr):
        if isinstance(ancestor, cst.Annotation):
            return True
        if isinstance(ancestor, (cst.BaseStatement, cst.Param, cst.Call)):
            return False
    return False


def _units(model: ModuleModel, refs: list[_Ref], blocked: set[ImportSite]) -> dict[int, _Unit]:
    units: dict[int, _Unit] = {}
    for ref in refs:
        key = id(ref.site.statement) if ref.site is not None else id(ref)
        unit = units.setdefault(key, _Unit())
        unit.refs.append(ref)
        if ref.replacements is None:
            unit.fixable = False
        else:
            unit.replacements.update(ref.replacements)
    for unit in units.values():
        site = unit.refs[0].site
        if site is None or not unit.fixable:
            continue
        statement_fix = _import_rewrite(model, site.statement, unit, blocked)
        if statement_fix is None:
            unit.fixable = False
        else:
            unit.replacements.update(statement_fix)
    return units


def _import_rewrite(
    model: ModuleModel,
    statement: cst.Import | cst.ImportFrom,
    unit: _Unit,
    blocked: set[ImportSite],
) -> dict[cst.CSTNode, Replacement] | None:
    sites = [s for sites in names_of(model).imports.values() for s in sites]
    own = [s for s in sites if s.statement is statement]
    if any(s in blocked for s in own):
        return None
    replacements: dict[cst.CSTNode, Replacement] = {}
    if isinstance(statement, cst.Import):
        for site in own:
            if site.qualified in LEGACY_MODULES and site.alias.asname is not None:
                new_module = cst.parse_expression(LEGACY_MODULES[site.qualified])
                replacements[site.alias] = site.alias.with_changes(name=new_module)
        return replacements or None
    module = own[0].from_module if own else None
    if module in LEGACY_MODULES:
        if not all(s.qualified in DEPRECATED or s.qualified in LEGACY_MODULES for s in own):
            return None
        new_module = LEGACY_MODULES[module]
    elif module in ("torch.cuda", "torch.cpu"):
        if not all(s.qualified in LEGACY_MODULES for s in own):
            return None
        new_module = "torch"
    elif module == "torch":
        for ref in unit.refs:
            spec = ref.spec
            if ref.site is not None and ref.form == "object" and spec.kind == "function":
                replacements[ref.site.alias] = ref.site.alias.with_changes(
                    name=cst.Name(spec.new_name)
                )
        return replacements or None
    else:
        return None
    module_node = cst.parse_expression(new_module)

    def rewrite(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.ImportFrom)
        return updated.with_changes(module=module_node)

    replacements[statement] = rewrite
    return replacements
