"""Training frameworks that own the AMP step: Hugging Face ``Trainer``, Accelerate, Lightning.

The facts the rules ask: where a module switches a framework's mixed precision on (and to
what, as far as literals show), which objects are those frameworks' instances, where their
own autocast is entered, and which calls run their backward. Names resolve through imports
and simple aliases, as for torch. Anything not written as a literal is unknown, and rules
stay quiet on unknowns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from weakref import WeakKeyDictionary

import libcst as cst

from amplint.analysis.clipping import clip_function
from amplint.analysis.model import ModuleModel, calls_in, method_name, receiver
from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.analysis.values import AutocastRegion

Framework = Literal["transformers", "accelerate", "lightning", "fabric"]
#: "fp16" / "bf16": mixed precision with that autocast dtype; "fp16-true" / "bf16-true":
#: parameters cast to that dtype (Lightning's "-true"); "off": full precision.
Precision = Literal["fp16", "bf16", "fp16-true", "bf16-true", "off"]

_CONSTRUCTORS: dict[str, Framework] = {}
for _name in (
    "transformers.TrainingArguments",
    "transformers.training_args.TrainingArguments",
    "transformers.Seq2SeqTrainingArguments",
    "transformers.training_args_seq2seq.Seq2SeqTrainingArguments",
):
    _CONSTRUCTORS[_name] = "transformers"
for _name in ("accelerate.Accelerator", "accelerate.accelerator.Accelerator"):
    _CONSTRUCTORS[_name] = "accelerate"
for _root in ("lightning", "lightning.pytorch", "pytorch_lightning"):
    _CONSTRUCTORS[f"{_root}.Trainer"] = "lightning"
for _root in ("lightning.pytorch", "pytorch_lightning"):
    _CONSTRUCTORS[f"{_root}.trainer.Trainer"] = "lightning"
    _CONSTRUCTORS[f"{_root}.trainer.trainer.Trainer"] = "lightning"
for _name in (
    "lightning.Fabric",
    "lightning.fabric.Fabric",
    "lightning.fabric.fabric.Fabric",
    "lightning_fabric.Fabric",
    "lightning_fabric.fabric.Fabric",
):
    _CONSTRUCTORS[_name] = "fabric"

_HF_TRAINERS = frozenset(
    {
        "transformers.Trainer",
        "transformers.trainer.Trainer",
        "transformers.Seq2SeqTrainer",
        "transformers.trainer_seq2seq.Seq2SeqTrainer",
    }
)

LIGHTNING_MODULES = frozenset(
    f"{root}.{path}"
    for root in ("lightning", "lightning.pytorch", "pytorch_lightning")
    for path in ("LightningModule", "core.LightningModule", "core.module.LightningModule")
)

#: Lightning's precision flags (``lightning.fabric.plugins.precision.precision``): the
#: aliases "16" / 16 mean "16-mixed", "bf16" means "bf16-mixed".
_LIGHTNING_PRECISION: dict[str, Precision] = {
    "16-mixed": "fp16",
    "16": "fp16",
    "bf16-mixed": "bf16",
    "bf16": "bf16",
    "16-true": "fp16-true",
    "bf16-true": "bf16-true",
    "32-true": "off",
    "32": "off",
    "64-true": "off",
    "64": "off",
}
_ACCELERATE_PRECISION: dict[str, Precision] = {"fp16": "fp16", "bf16": "bf16", "no": "off"}

#: A prefilter token group for rules that need a framework's configuration: every one is
#: imported from one of these packages, whose name the import statement spells.
IMPORT_TOKENS = (
    "^transformers",
    "^accelerate",
    "^lightning",
    "^pytorch_lightning",
    "^lightning_fabric",
)

#: Prefilter token groups: float16 (or any) mixed precision switched on by a literal, or
#: flags handed to a dataclass parser. The rules judge only literal switches.
_PARSED = ("parse_dict",)
FP16_TOKENS = (
    "=fp16:True",
    "=mixed_precision:fp16",
    "=precision:16-mixed",
    "=precision:16",
    *_PARSED,
)
MIXED_TOKENS = (
    *FP16_TOKENS,
    "=bf16:True",
    "=mixed_precision:bf16",
    "=precision:bf16-mixed",
    "=precision:bf16",
)
CPU_TOKENS = ("=use_cpu:True", "=no_cuda:True", "=cpu:True", "=accelerator:cpu", *_PARSED)

#: the packages whose import makes an unresolved ``x.autocast()`` / ``x.backward()`` a
#: framework's (a parameter named ``accelerator`` in a module that imports accelerate).
_FRAMEWORK_PACKAGES = ("accelerate", "lightning", "lightning_fabric", "pytorch_lightning")


@dataclass(frozen=True, eq=False)
class FrameworkAmp:
    """One place where a module configures a framework's precision."""

    framework: Framework
    #: the constructor call (or the parser call that carries the flags).
    call: cst.Call = field(repr=False)
    #: None when the precision is not written as a literal.
    precision: Precision | None
    #: True when the framework is told to run on CPU only (a literal).
    cpu_only: bool
    #: the argument that asks for float16 mixed precision, for messages and fixes.
    fp16_arg: cst.BaseExpression | None = field(default=None, repr=False)
    #: the argument that asks for bfloat16 (HF ``bf16=True``), for fp16-and-bf16 findings.
    bf16_arg: cst.BaseExpression | None = field(default=None, repr=False)

    @property
    def scales(self) -> bool:
        """The framework builds a GradScaler: float16 mixed precision, not on a CPU (where
        Accelerate builds none and Lightning switches to bfloat16)."""
        return self.precision == "fp16" and not self.cpu_only

    @property
    def label(self) -> str:
        return {
            "transformers": "TrainingArguments",
            "accelerate": "Accelerator",
            "lightning": "Trainer",
            "fabric": "Fabric",
        }[self.framework]


@dataclass(eq=False)
class Frameworks:
    """Everything this module knows about frameworks, computed once per module."""

    configs: list[FrameworkAmp]
    #: ``with x.autocast():`` where ``x`` is an Accelerator or a Fabric.
    autocast_withs: list[cst.With]
    imports_framework: bool


_CACHE: WeakKeyDictionary[ModuleModel, Frameworks] = WeakKeyDictionary()


def frameworks_of(model: ModuleModel) -> Frameworks:
    known = _CACHE.get(model)
    if known is None:
        known = _CACHE[model] = _collect(model)
    return known


def _collect(model: ModuleModel) -> Frameworks:
    imports = _imports_framework(model)
    configs: list[FrameworkAmp] = []
    for call in model.index.calls:
        config = _config_of_call(model, call)
        if config is not None and not model.is_dead(call):
            configs.append(config)
    facts = _CACHE[model] = Frameworks(configs, [], imports)
    # Recognising `accelerator.autocast()` asks for the configurations above.
    facts.autocast_withs = [
        w for w in model.index.withs if _framework_autocast_item(model, w, imports)
    ]
    return facts


def _imports_framework(model: ModuleModel) -> bool:
    for scope_bindings in _all_bindings(model):
        for binding in scope_bindings:
            if binding.kind is BindingKind.IMPORT and binding.qualified_name.split(".")[0] in (
                *_FRAMEWORK_PACKAGES,
                "transformers",
            ):
                return True
    return False


def _all_bindings(model: ModuleModel) -> list[list]:
    scopes = [model.index.module_scope, *model.index.functions.values()]
    return [bindings for scope in scopes for bindings in scope.bindings.values()]


# -- configurations -------------------------------------------------------------------------


def constructor_framework(model: ModuleModel, func: cst.BaseExpression) -> Framework | None:
    for name in model.evaluator.qualified_names(func):
        if name in _CONSTRUCTORS:
            return _CONSTRUCTORS[name]
    return None


def _keyword(call: cst.Call, name: str) -> cst.BaseExpression | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg.value
    return None


def _literal(node: cst.BaseExpression | None) -> str | int | bool | None:
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    if isinstance(node, cst.Integer):
        return int(node.value)
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    return None


def _config_of_call(model: ModuleModel, call: cst.Call) -> FrameworkAmp | None:
    framework = constructor_framework(model, call.func)
    if framework is None:
        return _parser_config(model, call)
    flags = _call_flags(call)
    if flags is None:
        return None  # `**kwargs`: anything may be set
    return _config(framework, call, flags)


def _call_flags(call: cst.Call) -> dict[str, cst.BaseExpression] | None:
    flags: dict[str, cst.BaseExpression] = {}
    for arg in call.args:
        if arg.star == "**" and isinstance(arg.value, cst.Dict):
            for element in arg.value.elements:
                if not isinstance(element, cst.DictElement):
                    return None
                key = _literal(element.key)
                if not isinstance(key, str):
                    return None
                flags[key] = element.value
        elif arg.star:
            return None
        elif arg.keyword is not None:
            flags[arg.keyword.value] = arg.value
    return flags


def _config(
    framework: Framework, call: cst.Call, flags: dict[str, cst.BaseExpression]
) -> FrameworkAmp:
    if framework == "transformers":
        fp16, bf16 = flags.get("fp16"), flags.get("bf16")
        cpu = any(_literal(flags.get(name)) is True for name in ("use_cpu", "no_cuda"))
        fp16_on, bf16_on = _literal(fp16), _literal(bf16)
        precision: Precision | None
        if fp16_on is True:
            precision = "fp16"
        elif bf16_on is True:
            precision = "bf16"
        elif (fp16 is None or fp16_on is False) and (bf16 is None or bf16_on is False):
            precision = "off"
        else:
            precision = None  # `fp16=args.fp16`
        return FrameworkAmp(
            framework,
            call,
            precision,
            cpu,
            fp16 if fp16_on is True else None,
            bf16 if bf16_on is True else None,
        )
    if framework == "accelerate":
        value = flags.get("mixed_precision")
        literal = _literal(value)
        # Without the argument, `accelerate launch` / the config file decides: unknown.
        acc_precision = _ACCELERATE_PRECISION.get(literal) if isinstance(literal, str) else None
        cpu = _literal(flags.get("cpu")) is True
        return FrameworkAmp(
            framework, call, acc_precision, cpu, value if acc_precision == "fp16" else None
        )
    value = flags.get("precision")
    literal = _literal(value)
    if value is None:
        light_precision: Precision | None = "off"  # Lightning's default is "32-true"
    elif isinstance(literal, (str, int)) and not isinstance(literal, bool):
        light_precision = _LIGHTNING_PRECISION.get(str(literal))
    else:
        light_precision = None
    cpu = _literal(flags.get("accelerator")) == "cpu"
    return FrameworkAmp(
        framework, call, light_precision, cpu, value if light_precision == "fp16" else None
    )


def literal_flags(call: cst.Call) -> dict[str, str | int | bool | None]:
    """The keyword arguments of a configuration call (or what a dataclass parser is given)
    as literals; None for a value that is not one."""
    flags = _parser_flags(call) if method_name(call) in _PARSER_METHODS else _call_flags(call)
    return {name: _literal(value) for name, value in (flags or {}).items()}


#: ``HfArgumentParser`` methods whose argument shows the flags.
_PARSER_METHODS = ("parse_dict",)


def _parser_flags(call: cst.Call) -> dict[str, cst.BaseExpression] | None:
    """``parse_dict({"fp16": True})``: the flags, when every one is written out; None
    otherwise."""
    given = _keyword(call, "args")
    if given is None and call.args and call.args[0].keyword is None:
        given = call.args[0].value
    if isinstance(given, cst.Dict) and method_name(call) == "parse_dict":
        flags: dict[str, cst.BaseExpression] = {}
        for element in given.elements:
            if not isinstance(element, cst.DictElement):
                return None
            key = _literal(element.key)
            if not isinstance(key, str):
                return None
            flags[key] = element.value
        return flags
    return None


def _parser_config(model: ModuleModel, call: cst.Call) -> FrameworkAmp | None:
    """``HfArgumentParser(TrainingArguments).parse_dict({"fp16": True, ...})``: the
    dataclass parser's equivalent of the constructor, where the values are literals."""
    if method_name(call) not in _PARSER_METHODS:
        return None
    parser = receiver(call)
    if parser is None or not _is_training_arguments_parser(model, parser):
        return None
    flags = _parser_flags(call)
    return _config("transformers", call, flags) if flags is not None else None


def _is_training_arguments_parser(model: ModuleModel, node: cst.BaseExpression) -> bool:
    for value in [node, *_assigned(model, node)]:
        if not isinstance(value, cst.Call):
            continue
        names = model.evaluator.qualified_names(value.func)
        if not any(
            n.split(".")[0] == "transformers" and n.endswith("HfArgumentParser") for n in names
        ):
            continue
        for arg in value.args:
            items = arg.value.elements if isinstance(arg.value, (cst.Tuple, cst.List)) else None
            candidates = [e.value for e in items] if items is not None else [arg.value]
            if any(constructor_framework(model, c) == "transformers" for c in candidates):
                return True
    return False


# -- instances ------------------------------------------------------------------------------


def _assigned(model: ModuleModel, node: cst.BaseExpression) -> list[cst.BaseExpression]:
    """What a name or ``self.attr`` was assigned (every binding), else nothing."""
    if isinstance(node, cst.Name):
        bindings = model.index.scope_of(node).lookup(node.value)
    elif isinstance(node, cst.Attribute) and dotted_name(node.value) == "self":
        info = model.index.enclosing_class(node)
        bindings = info.attributes.get(node.attr.value, []) if info is not None else []
    else:
        return []
    return [
        b.node
        for b in bindings
        if b.kind is BindingKind.ASSIGN and isinstance(b.node, cst.BaseExpression)
    ]


def configs_of(model: ModuleModel, node: cst.BaseExpression) -> list[FrameworkAmp] | None:
    """The configurations an expression holds: None when it is not known to be a framework
    object at all; a list (one per binding) when every binding is one."""
    known = {id(c.call): c for c in frameworks_of(model).configs}
    values = [node] if isinstance(node, cst.Call) else _assigned(model, node)
    if not values:
        return None
    found: list[FrameworkAmp] = []
    for value in values:
        config = known.get(id(value)) if isinstance(value, cst.Call) else None
        if config is None:
            return None
        found.append(config)
    return found


def surely_precision(
    model: ModuleModel, node: cst.BaseExpression, *precisions: Precision
) -> FrameworkAmp | None:
    """The configuration of ``node`` when every binding of it has one of ``precisions``."""
    configs = configs_of(model, node)
    if not configs or any(c.precision not in precisions for c in configs):
        return None
    return configs[0]


def module_configs(model: ModuleModel, framework: Framework) -> list[FrameworkAmp]:
    return [c for c in frameworks_of(model).configs if c.framework == framework]


def sole_precision(model: ModuleModel, framework: Framework) -> FrameworkAmp | None:
    """The one configuration of ``framework`` in this module, when there is exactly one and
    its precision is a literal; None otherwise (several trainers, or a flag)."""
    configs = module_configs(model, framework)
    if len(configs) != 1 or configs[0].precision is None:
        return None
    return configs[0]


# -- framework autocast and backward -------------------------------------------------------


def _framework_autocast_item(model: ModuleModel, with_node: cst.With, imports: bool) -> bool:
    return any(is_framework_autocast(model, item.item, imports) for item in with_node.items)


def is_framework_autocast(
    model: ModuleModel, expr: cst.BaseExpression, imports: bool | None = None
) -> bool:
    """``accelerator.autocast()`` / ``fabric.autocast()``: the framework's own autocast."""
    if not isinstance(expr, cst.Call) or method_name(expr) != "autocast":
        return False
    if any(isinstance(v, AutocastRegion) for v in model.evaluator.evaluate(expr)):
        return False  # torch's own autocast, which the analysis already understands
    target = receiver(expr)
    assert target is not None
    configs = configs_of(model, target)
    if configs is not None:
        return all(
            c.framework in ("accelerate", "fabric") and c.precision != "off" for c in configs
        )
    if imports is None:
        imports = frameworks_of(model).imports_framework
    name = _last(target)
    # An accelerator or fabric passed in as a parameter or built elsewhere.
    return imports and name in ("accelerator", "fabric") and not _assigned(model, target)


def framework_autocast_withs(model: ModuleModel) -> list[cst.With]:
    return frameworks_of(model).autocast_withs


def enclosing_framework_autocast(model: ModuleModel, node: cst.CSTNode) -> cst.With | None:
    """The innermost framework autocast ``with`` around ``node`` in its function."""
    withs = frameworks_of(model).autocast_withs
    if not withs:
        return None
    child: cst.CSTNode = node
    for ancestor in model.index.ancestors(node):
        if isinstance(ancestor, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            return None
        if isinstance(ancestor, cst.With) and child is ancestor.body and ancestor in withs:
            return ancestor
        child = ancestor
    return None


def is_lightning_module(model: ModuleModel, class_def: cst.ClassDef, depth: int = 0) -> bool:
    """A subclass of Lightning's ``LightningModule``, directly or through classes of this
    module."""
    if depth > 8:
        return False
    for base in class_def.bases:
        if model.evaluator.qualified_names(base.value) & LIGHTNING_MODULES:
            return True
        if isinstance(base.value, cst.Name):
            bindings = model.index.scope_of(class_def).lookup(base.value.value)
            if (
                len(bindings) == 1
                and bindings[0].kind is BindingKind.CLASS
                and isinstance(bindings[0].node, cst.ClassDef)
                and is_lightning_module(model, bindings[0].node, depth + 1)
            ):
                return True
    return False


def is_framework_backward(model: ModuleModel, call: cst.Call) -> bool:
    """``self.manual_backward(loss)`` in a LightningModule: Lightning's backward, which the
    torch analysis does not know (``accelerator.backward`` is a ``.backward`` already)."""
    if method_name(call) != "manual_backward" or dotted_name(receiver(call) or call.func) != "self":
        return False
    info = model.index.enclosing_class(call)
    return info is not None and is_lightning_module(model, info.node)


def _last(node: cst.BaseExpression) -> str | None:
    if isinstance(node, cst.Attribute):
        return node.attr.value
    if isinstance(node, cst.Name):
        return node.value
    return None


def calls_after(model: ModuleModel, unit: cst.CSTNode, start: cst.Call) -> list[cst.Call]:
    calls = calls_in(unit)
    return list(calls[calls.index(start) + 1 :]) if start in calls else []


# -- clipping on still-scaled gradients (AMP006) -------------------------------------------

#: calls after which the gradients are no longer scaled, or the step is over.
_UNSCALES = frozenset(
    {
        "unscale_gradients",
        "unscale_",
        "clip_grad_norm_",
        "clip_grad_value_",
        "clip_grads_with_norm_",
        "clip_gradients",
    }
)


#: the frameworks whose objects have a ``backward(loss)`` that scales the loss.
_OWN_BACKWARD = ("accelerate", "fabric")


@dataclass(frozen=True, eq=False)
class ScaledClip:
    """A clip of gradients that a framework's GradScaler still multiplies by the loss scale."""

    call: cst.Call = field(repr=False)
    config: FrameworkAmp
    #: what to do instead, in the framework's own terms.
    remedy: str
    #: the Accelerator / Fabric expression whose own clip replaces the call, when certain.
    owner: cst.BaseExpression | None = field(default=None, repr=False)


def framework_scaled_clips(model: ModuleModel) -> list[ScaledClip]:
    """Clips between a framework's scaled backward and its optimizer step.

    Accelerate and Fabric scale the loss in ``accelerator.backward`` / ``fabric.backward``
    under float16 mixed precision and unscale only in their own ``clip_grad_norm_`` /
    ``clip_gradients`` or at the step. Lightning's manual optimisation scales in
    ``self.manual_backward`` and unscales inside ``optimizer.step()``, after the closure:
    every clip before that step (``self.clip_gradients`` included) sees scaled gradients.
    """
    facts = frameworks_of(model)
    if not facts.configs:
        return []
    found: list[ScaledClip] = []
    for call in model.index.calls:
        if model.is_dead(call):
            continue
        if method_name(call) == "backward" and call.args:
            owner = receiver(call)
            assert owner is not None
            config = surely_precision(model, owner, "fp16")
            if config is None or not config.scales or config.framework not in _OWN_BACKWARD:
                continue
            clip = _clip_before_step(model, call, torch_only=True)
            if clip is not None:
                own = "clip_grad_norm_" if config.framework == "accelerate" else "clip_gradients"
                if config.framework == "accelerate" and "value" in _clip_name(model, clip):
                    own = "clip_grad_value_"
                found.append(
                    ScaledClip(
                        clip,
                        config,
                        f"use `{dotted_name(owner) or config.framework}.{own}(...)`, which "
                        "unscales them first",
                        owner if config.framework == "accelerate" else None,
                    )
                )
        elif is_framework_backward(model, call):
            config = sole_precision(model, "lightning")
            if config is None or not config.scales:
                continue
            clip = _clip_before_step(model, call, torch_only=False)
            if clip is not None:
                found.append(
                    ScaledClip(
                        clip,
                        config,
                        "Lightning unscales them inside `optimizer.step()`; clip in the "
                        "`on_before_optimizer_step` hook, which runs after the unscale",
                    )
                )
    found.extend(_after_backward_hook_clips(model))
    return found


def _clip_name(model: ModuleModel, call: cst.Call) -> str:
    return method_name(call) or (call.func.value if isinstance(call.func, cst.Name) else "") or ""


def _clip_before_step(
    model: ModuleModel, backward: cst.Call, *, torch_only: bool
) -> cst.Call | None:
    """The first clip after ``backward`` in its function, in the same loops, before any
    unscale or step, and followed by a step."""
    function = model.index.enclosing_function(backward)
    unit: cst.CSTNode = function.body if function is not None else model.module
    loops = model.enclosing_loops(backward)
    after = calls_after(model, unit, backward)
    for position, call in enumerate(after):
        name = method_name(call)
        if name == "step" or name in ("backward", "manual_backward"):
            return None
        torch_clip = clip_function(model, call) is not None
        lightning_clip = (
            not torch_only
            and name == "clip_gradients"
            and dotted_name(receiver(call) or call.func) == "self"
        )
        if torch_clip or lightning_clip:
            if model.enclosing_loops(call) != loops:
                return None
            later = after[position + 1 :]
            return call if any(method_name(c) == "step" for c in later) else None
        if name in _UNSCALES:
            return None
    return None


def _after_backward_hook_clips(model: ModuleModel) -> list[ScaledClip]:
    """Clips in a LightningModule's ``on_after_backward``: Lightning documents that the
    gradients are not unscaled yet there under AMP."""
    config = sole_precision(model, "lightning")
    if config is None or not config.scales:
        return []
    found = []
    for info in model.index.classes.values():
        hook = info.methods.get("on_after_backward")
        if hook is None or not is_lightning_module(model, info.node):
            continue
        for call in calls_in(hook.body):
            if clip_function(model, call) is not None and not model.is_dead(call):
                found.append(
                    ScaledClip(
                        call,
                        config,
                        "gradients are still scaled in `on_after_backward`; clip in "
                        "`on_before_optimizer_step` (or `configure_gradient_clipping`)",
                    )
                )
    return found


# -- where a model goes to train under a framework (AMP022, AMP025) ------------------------


@dataclass(frozen=True, eq=False)
class Handoff:
    """A call that gives a model to a framework that trains it: ``Trainer(model=m, args=a)``,
    ``accelerator.prepare(m, ...)``, ``trainer.fit(m)``, ``fabric.setup(m, ...)``."""

    call: cst.Call = field(repr=False)
    model_expr: cst.BaseExpression = field(repr=False)
    config: FrameworkAmp


def handoffs(model: ModuleModel) -> list[Handoff]:
    facts = frameworks_of(model)
    if not facts.configs:
        return []
    found: list[Handoff] = []
    for call in model.index.calls:
        if model.is_dead(call):
            continue
        if model.evaluator.qualified_names(call.func) & _HF_TRAINERS:
            target = _keyword(call, "model")
            args = _keyword(call, "args")
            positional = [a.value for a in call.args if a.keyword is None and not a.star]
            target = target if target is not None else (positional[0] if positional else None)
            args = args if args is not None else (positional[1] if len(positional) > 1 else None)
            if target is None or args is None:
                continue
            configs = configs_of(model, args)
            if configs and len(configs) == 1:
                found.append(Handoff(call, target, configs[0]))
            continue
        name = method_name(call)
        if name not in ("prepare", "fit", "setup", "setup_module", "prepare_model"):
            continue
        owner = receiver(call)
        assert owner is not None
        configs = configs_of(model, owner)
        if not configs or len(configs) != 1:
            continue
        config = configs[0]
        expected = {
            "accelerate": ("prepare", "prepare_model"),
            "lightning": ("fit",),
            "fabric": ("setup", "setup_module"),
        }.get(config.framework, ())
        if name not in expected:
            continue
        for arg in call.args:
            if arg.star:
                continue
            if arg.keyword is None or arg.keyword.value in ("model", "module"):
                found.append(Handoff(call, arg.value, config))
                if config.framework != "accelerate":
                    break
    return found
