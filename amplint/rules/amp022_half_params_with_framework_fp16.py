"""AMP022 half-params-with-framework-fp16."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.frameworks import FP16_TOKENS, IMPORT_TOKENS, FrameworkAmp, Handoff, handoffs
from amplint.analysis.model import ModuleModel, method_name, receiver
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.analysis.symbols import Symbol
from amplint.analysis.values import SymbolValue
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

#: Words that say only part of the model trains, or that something else owns the dtypes:
#: adapters (PEFT/LoRA), frozen parameters, quantized loading, DeepSpeed / FSDP (float32
#: master weights of their own), or a cast back. Any of them in the module: stay quiet.
_NOT_WHOLE_MODEL = re.compile(
    r"peft|lora|adapter|requires_grad|freeze|frozen|kbit|int8|8bit|4bit|quantiz|bnb|"
    r"bitsandbytes|deepspeed|fsdp|float32|\.float\(\)|trainable",
    re.IGNORECASE,
)
_DTYPE_KEYWORDS = ("torch_dtype", "dtype")
_KEEPS_MODEL = ("cuda", "to", "train", "half")


class HalfParamsWithFrameworkFp16(Rule):
    code = "AMP022"
    tokens = (IMPORT_TOKENS, FP16_TOKENS, ("half", "float16", "torch_dtype", "dtype"))

    valid = (
        # The recipe: float32 weights, the framework autocasts.
        """
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("gpt2")
args = TrainingArguments("out", fp16=True)
Trainer(model=model, args=args, train_dataset=data).train()
""",
        # A frozen float16 base with float32 LoRA adapters trains fine.
        """
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("gpt2", torch_dtype=torch.float16)
model = get_peft_model(model, LoraConfig(r=8))
Trainer(model=model, args=TrainingArguments("out", fp16=True)).train()
""",
        # prepare_model_for_kbit_training casts what trains to float32.
        """
import torch
from peft import prepare_model_for_kbit_training
from accelerate import Accelerator
model = AutoModel.from_pretrained("m", torch_dtype=torch.float16, load_in_8bit=True)
model = prepare_model_for_kbit_training(model)
accelerator = Accelerator(mixed_precision="fp16")
model, optimizer = accelerator.prepare(model, optimizer)
""",
        # The trainable set is not visible: parameters are frozen by a loop.
        """
import torch
import lightning as L
model = Net().half()
for p in model.encoder.parameters():
    p.requires_grad = False
L.Trainer(precision="16-mixed").fit(model)
""",
        # bf16 mixed precision has no GradScaler.
        """
import torch
from accelerate import Accelerator
model = Net().to(torch.float16)
accelerator = Accelerator(mixed_precision="bf16")
model, optimizer = accelerator.prepare(model, optimizer)
""",
        # The precision comes from the command line: unknown.
        """
import torch
from transformers import Trainer, TrainingArguments
model = AutoModel.from_pretrained("m", torch_dtype=torch.float16)
Trainer(model=model, args=TrainingArguments("out", fp16=args.fp16)).train()
""",
        # Lightning's pure float16 precision expects float16 weights.
        """
import lightning as L
model = Net().half()
L.Trainer(precision="16-true").fit(model)
""",
        # DeepSpeed keeps float32 master weights of its own.
        """
import torch
from transformers import Trainer, TrainingArguments
model = AutoModel.from_pretrained("m", torch_dtype=torch.float16)
args = TrainingArguments("out", fp16=True, deepspeed="ds_config.json")
Trainer(model=model, args=args).train()
""",
        # A dtype chosen at run time.
        """
import torch
from transformers import Trainer, TrainingArguments
dtype = torch.float16 if args.half else torch.float32
model = AutoModel.from_pretrained("m", torch_dtype=dtype)
Trainer(model=model, args=TrainingArguments("out", fp16=True)).train()
""",
        # The float16 model is a frozen teacher, not what the framework trains.
        """
import torch
from accelerate import Accelerator
teacher = AutoModel.from_pretrained("t", torch_dtype=torch.float16)
student = AutoModel.from_pretrained("s")
accelerator = Accelerator(mixed_precision="fp16")
student, optimizer = accelerator.prepare(student, optimizer)
""",
    )
    invalid = (
        Invalid(
            """
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("gpt2", torch_dtype=torch.float16)
args = TrainingArguments("out", fp16=True)
Trainer(model=model, args=args, train_dataset=data).train()
""",
            line=4,
            unsafe=True,
            fixed="""
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
model = AutoModelForCausalLM.from_pretrained("gpt2", torch_dtype=torch.float32)
args = TrainingArguments("out", fp16=True)
Trainer(model=model, args=args, train_dataset=data).train()
""",
        ),
        # Accelerate under an alias, `.half()` in place.
        Invalid(
            """
import torch
from accelerate import Accelerator as Acc
model = Net()
model.half()
acc = Acc(mixed_precision="fp16")
model, optimizer, loader = acc.prepare(model, optimizer, loader)
""",
            line=5,
        ),
        # Lightning: the module, cast to float16, fit under 16-mixed.
        Invalid(
            """
import torch
import pytorch_lightning as pl
model = LitModel().to(torch.half)
trainer = pl.Trainer(precision=16)
trainer.fit(model, datamodule=dm)
""",
            line=4,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        if _NOT_WHOLE_MODEL.search(model.text):
            return
        reported: set[cst.CSTNode] = set()
        for handoff in handoffs(model):
            config = handoff.config
            if not config.scales:
                continue
            for cast in _half_casts(model, handoff):
                if cast in reported:
                    continue
                reported.add(cast)
                text = model.snippet(cast, 48)
                context.report(
                    cast,
                    f"`{text}` makes the parameters float16, and the model then trains under "
                    f"{_switch(config)}: {_effect(config)}; {_remedy(config)}",
                    _float32_fix(model, cast),
                )


def _switch(config: FrameworkAmp) -> str:
    return {
        "transformers": "`TrainingArguments(fp16=True)`",
        "accelerate": '`Accelerator(mixed_precision="fp16")`',
        "lightning": '`Trainer(precision="16-mixed")`',
        "fabric": '`Fabric(precision="16-mixed")`',
    }[config.framework]


def _effect(config: FrameworkAmp) -> str:
    return (
        "its GradScaler stops the first step with 'ValueError: Attempting to unscale FP16 "
        "gradients.'"
    )


def _remedy(config: FrameworkAmp) -> str:
    if config.framework in ("lightning", "fabric"):
        return (
            'keep the weights float32 under "16-mixed", or train pure float16 with '
            'precision="16-true"'
        )
    return (
        "load the trainable weights in float32 and let mixed precision autocast, or freeze "
        "the float16 base and train float32 adapters (PEFT)"
    )


def _is_float16(model: ModuleModel, expr: cst.BaseExpression) -> bool:
    if isinstance(expr, cst.SimpleString):
        return expr.evaluated_value == "float16"
    values = model.evaluator.evaluate(expr)
    return bool(values) and all(
        isinstance(v, SymbolValue) and v.symbol is Symbol.FLOAT16 for v in values
    )


def _dtype_keyword(model: ModuleModel, call: cst.Call) -> cst.Arg | None:
    if method_name(call) != "from_pretrained":
        return None
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value in _DTYPE_KEYWORDS:
            return arg if _is_float16(model, arg.value) else None
    return None


def _is_cast_call(model: ModuleModel, call: cst.Call) -> bool:
    name = method_name(call)
    if name == "half":
        return not call.args
    if name == "to":
        return any(
            (a.keyword is None or a.keyword.value == "dtype") and _is_float16(model, a.value)
            for a in call.args
        )
    return _dtype_keyword(model, call) is not None


def _chain_cast(model: ModuleModel, expr: cst.BaseExpression) -> cst.Call | None:
    """The float16 cast in ``Net().cuda().half()`` / ``from_pretrained(..., dtype=half)``,
    when every call after it in the chain keeps the module (``.cuda()``, ``.to(device)``)."""
    current = expr
    while isinstance(current, cst.Call):
        if _is_cast_call(model, current):
            return current
        if method_name(current) not in _KEEPS_MODEL:
            return None
        target = receiver(current)
        if target is None:
            return None
        current = target
    return None


def _half_casts(model: ModuleModel, handoff: Handoff) -> list[cst.Call]:
    """The float16 casts of the model the framework trains: in the assignment that binds it
    (its only binding), or as an in-place ``model.half()`` statement before the handoff."""
    target = handoff.model_expr
    if not isinstance(target, cst.Name):
        return []
    direct = _chain_cast(model, target) if isinstance(target, cst.Call) else None
    if direct is not None:
        return [direct]
    bindings = model.index.scope_of(target).lookup(target.value)
    # One assignment; the framework's own `model, opt = accelerator.prepare(model, opt)`
    # rebinding (a tuple target, value unknown) is allowed, parameters and imports are not.
    assigned = [b for b in bindings if b.kind is BindingKind.ASSIGN]
    if len(assigned) != 1 or any(
        b.kind not in (BindingKind.ASSIGN, BindingKind.OTHER) for b in bindings
    ):
        return []
    casts: list[cst.Call] = []
    value = assigned[0].node
    if isinstance(value, cst.Call) and (cast := _chain_cast(model, value)) is not None:
        casts.append(cast)
    scope_node = model.index.enclosing_function(handoff.call)
    body = scope_node.body if scope_node is not None else model.module
    handoff_line = model.statement_in_block(handoff.call)
    for statement in getattr(body, "body", ()):
        if statement is handoff_line:
            break
        if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
            continue
        small = statement.body[0]
        if (
            isinstance(small, cst.Expr)
            and isinstance(small.value, cst.Call)
            and method_name(small.value) in ("half", "to")
            and _is_cast_call(model, small.value)
            and dotted_name(receiver(small.value) or small.value) == target.value
        ):
            casts.append(small.value)
    return casts


def _float32_fix(model: ModuleModel, cast: cst.Call) -> FixPlan | None:
    arg = _dtype_keyword(model, cast)
    if arg is None:
        return None
    value = arg.value
    # Only `torch.float16` / `torch.half` written on the torch module: swap the attribute.
    if not (
        isinstance(value, cst.Attribute)
        and value.attr.value in ("float16", "half")
        and "torch" in {n.split(".")[0] for n in model.evaluator.qualified_names(value.value)}
    ):
        return None
    return FixPlan(
        "Load the weights in float32",
        {value.attr: cst.Name("float32")},
        "unsafe",
    )
