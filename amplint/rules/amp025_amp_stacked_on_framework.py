"""AMP025 amp-stacked-on-framework."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.frameworks import (
    IMPORT_TOKENS,
    MIXED_TOKENS,
    FrameworkAmp,
    enclosing_framework_autocast,
    is_framework_backward,
    is_lightning_module,
    sole_precision,
    surely_precision,
)
from amplint.analysis.model import ModuleModel, method_name, receiver
from amplint.engine.contract import Invalid, Rule, RuleContext

_DTYPE = {"fp16": "float16", "bf16": "bfloat16"}


class AmpStackedOnFramework(Rule):
    code = "AMP025"
    tokens = (IMPORT_TOKENS, MIXED_TOKENS, ("scale", "autocast"))

    valid = (
        # The framework scales; the user does not.
        """
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
for batch in loader:
    with accelerator.autocast():
        loss = model(batch)
    accelerator.backward(loss)
""",
        # Under bf16 the framework has no scaler: the user's own is the only one.
        """
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="bf16")
scaler = torch.amp.GradScaler()
for batch in loader:
    accelerator.backward(scaler.scale(model(batch)))
""",
        # Autocast switched off for a numerically sensitive part, or the same dtype.
        """
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
with accelerator.autocast():
    h = model(x)
    with torch.autocast("cuda", enabled=False):
        y = head(h.float())
    with torch.autocast("cuda", dtype=torch.float16):
        z = other(h)
""",
        # The Trainer is built with a flag: its precision is unknown.
        """
import torch
import lightning as L
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.model(batch)
trainer = L.Trainer(precision=args.precision)
""",
    )
    invalid = (
        Invalid(
            """
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
scaler = torch.amp.GradScaler()
for batch in loader:
    loss = scaler.scale(model(batch))
    accelerator.backward(loss)
""",
            line=8,
        ),
        # A bfloat16 autocast inside Accelerate's float16 one.
        Invalid(
            """
import torch
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16")
with accelerator.autocast():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x)
""",
            line=6,
        ),
        # float16 autocast in a training_step that Lightning runs under bf16-mixed.
        Invalid(
            """
import torch
import lightning as L
class Lit(L.LightningModule):
    def training_step(self, batch, i):
        with torch.autocast("cuda", dtype=torch.float16):
            return self.model(batch)
trainer = L.Trainer(precision="bf16-mixed")
trainer.fit(Lit())
""",
            line=6,
        ),
        # Lightning manual optimisation with the user's scaler under 16-mixed.
        Invalid(
            """
import torch
import pytorch_lightning as pl
class Lit(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.scaler = torch.amp.GradScaler()
    def training_step(self, batch, i):
        self.manual_backward(self.scaler.scale(self.model(batch)))
trainer = pl.Trainer(precision="16-mixed")
""",
            line=10,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for call in model.index.calls:
            if model.is_dead(call):
                continue
            config = _scaling_backward(model, call)
            if config is not None and _scaled_argument(model, call):
                context.report(
                    call,
                    f"the loss is already scaled by your GradScaler, and {config.label}'s float16 "
                    "mixed precision scales it again and unscales only its own scale; "
                    "drop your GradScaler and let the framework scale",
                )
        for with_node in model.autocast_withs:
            for region in model.autocast_regions(with_node):
                if not region.may_be_enabled or region.dtype is None:
                    continue
                framework = _framework_dtype(model, with_node)
                if framework is None:
                    continue
                config, dtype = framework
                if dtype != region.dtype:
                    context.report(
                        region.call,
                        f"`{region.dtype}` autocast inside {config.label}'s `{dtype}` mixed "
                        f"precision overrides it: "
                        + (
                            "float16 compute with no loss scaling"
                            if region.dtype == "float16"
                            else "the framework's GradScaler then scales for nothing"
                        )
                        + "; set the precision on the framework alone",
                    )


def _scaling_backward(model: ModuleModel, call: cst.Call) -> FrameworkAmp | None:
    """The fp16 configuration whose backward ``call`` is (it scales the loss)."""
    if method_name(call) == "backward" and call.args:
        owner = receiver(call)
        assert owner is not None
        config = surely_precision(model, owner, "fp16")
        if config is not None and config.framework in ("accelerate", "fabric") and config.scales:
            return config
        return None
    if is_framework_backward(model, call) and call.args:
        config = sole_precision(model, "lightning")
        if config is not None and config.scales:
            return config
    return None


def _scaled_argument(model: ModuleModel, call: cst.Call) -> bool:
    """The first argument is ``scaler.scale(...)`` of an enabled GradScaler, or a name bound
    only to that in the same function."""
    argument = call.args[0].value
    candidates: list[cst.BaseExpression] = [argument]
    if isinstance(argument, cst.Name):
        bindings = model.index.scope_of(argument).lookup(argument.value)
        if not bindings or any(b.node is None for b in bindings):
            return False
        candidates = [b.node for b in bindings]  # type: ignore[misc]
    for value in candidates:
        if not (isinstance(value, cst.Call) and method_name(value) == "scale"):
            return False
        scaler = receiver(value)
        if scaler is None or not model.is_scaler(scaler):
            return False
        if any(s.enabled is False for s in model.scaler_instances(scaler)):
            return False
    return True


def _framework_dtype(model: ModuleModel, with_node: cst.With) -> tuple[FrameworkAmp, str] | None:
    """The framework autocast around ``with_node`` and its dtype, when both are literals."""
    outer = enclosing_framework_autocast(model, with_node)
    if outer is not None:
        for item in outer.items:
            call = item.item
            if isinstance(call, cst.Call) and method_name(call) == "autocast":
                owner = receiver(call)
                config = surely_precision(model, owner, "fp16", "bf16") if owner else None
                if config is not None and not config.cpu_only:
                    return config, _DTYPE[config.precision]  # type: ignore[index]
        return None
    function = model.index.enclosing_function(with_node)
    info = model.index.enclosing_class(with_node)
    if function is None or info is None or function.name.value != "training_step":
        return None
    if info.methods.get("training_step") is not function or not is_lightning_module(
        model, info.node
    ):
        return None
    config = sole_precision(model, "lightning")
    if config is None or config.precision not in ("fp16", "bf16"):
        return None
    precision = "bf16" if config.cpu_only else config.precision
    return config, _DTYPE[precision]
