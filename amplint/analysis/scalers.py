"""Is this a loss scaler? One answer, asked by every rule and analysis.

- :meth:`ModuleModel.is_scaler`: surely a GradScaler, from the values the module assigns.
- :func:`scaler_state`: a GradScaler as far as the module shows, or an opaque name that says
  it is one (a ``scaler`` parameter, ``self.grad_scaler`` set elsewhere), and whether it is
  on. Feature scalers of tabular code (``StandardScaler`` and kin) and wrapper classes of the
  same module (timm's ``NativeScaler``) are not loss scalers.
- :func:`scaler_like`: either of the two.
- :func:`named_like_scaler`: the naming convention alone, for parameters.
- :func:`updated_somewhere`: whether some ``update()`` of the module may be a scaler's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import libcst as cst

from amplint.analysis.scopes import BindingKind, dotted_name
from amplint.analysis.values import NoneValue, ScalerInstance, Unknown

if TYPE_CHECKING:
    from amplint.analysis.model import ModuleModel

#: scikit-learn's feature scalers: tabular preprocessing, not loss scaling.
FEATURE_SCALER = re.compile(r"(standard|min_?max|robust|max_?abs)_?scaler$", re.IGNORECASE)


def named_like_scaler(name: str) -> bool:
    """``scaler``, ``self.grad_scaler``, ``loss_scaler``; not ``StandardScaler``."""
    last = name.rsplit(".", 1)[-1]
    return "scaler" in last.lower() and not FEATURE_SCALER.search(last)


def scaler_like(model: ModuleModel, expr: cst.BaseExpression | None) -> bool:
    """A GradScaler as far as the module shows (on or off), or an opaque name that says it
    is one."""
    if expr is None:
        return False
    return model.is_scaler(expr) or scaler_state(model, expr) is not None


def scaler_state(model: ModuleModel, expr: cst.BaseExpression) -> str | None:
    """``"enabled"`` for a GradScaler (or what is surely one: a ``scaler`` parameter or
    attribute the module cannot see into), ``"disabled"`` for one built with
    ``enabled=False``, None for anything else."""
    if not isinstance(expr, (cst.Name, cst.Attribute)):
        return None
    values = model.evaluator.evaluate(expr)
    scalers = [v for v in values if isinstance(v, ScalerInstance)]
    if scalers:
        if not all(isinstance(v, (ScalerInstance, NoneValue)) for v in values):
            return None
        return "disabled" if all(s.enabled is False for s in scalers) else "enabled"
    if not all(isinstance(v, (Unknown, NoneValue)) for v in values):
        return None
    name = expr.attr.value if isinstance(expr, cst.Attribute) else expr.value
    if not named_like_scaler(name):
        return None
    if _holds_local_instance(model, expr):
        return None  # timm's NativeScaler and kin: a wrapper class of this module
    return "enabled"


def _holds_local_instance(model: ModuleModel, expr: cst.Name | cst.Attribute) -> bool:
    if isinstance(expr, cst.Name):
        bindings = model.index.scope_of(expr).lookup(expr.value)
    elif dotted_name(expr.value) == "self":
        info = model.index.enclosing_class(expr)
        bindings = info.attributes.get(expr.attr.value, []) if info is not None else []
    else:
        return False
    for binding in bindings:
        value = binding.node
        if binding.kind is BindingKind.ASSIGN and isinstance(value, cst.Call):
            func = value.func
            name = func.value if isinstance(func, cst.Name) else None
            if name is not None and name in model.index.class_by_name:
                return True
            callee = model.module.code_for_node(func)
            if "scaler" not in callee.lower() or FEATURE_SCALER.search(callee):
                return True  # `scaler = build_something()`: not evidently a GradScaler
    return False


def updated_somewhere(
    model: ModuleModel, key: str, stepped: Sequence[ScalerInstance] = (), *, by_name: bool = True
) -> bool:
    """Whether some ``update()`` call of the module may update the scaler written ``key``
    (``self.scaler``, ``scaler``): one on a name that ends the same way (unless not
    ``by_name``: a function's local is no other function's), or one on a scaler reached
    through a call (``self.get_scaler().update()``) that may be this one: built where one
    of ``stepped`` (the stepped scaler's instances, where known) was built."""
    from amplint.analysis.model import method_name, receiver, receiver_key

    attribute = key.rsplit(".", 1)[-1]
    for call in model.index.calls:
        if method_name(call) != "update":
            continue
        updated = receiver_key(call)
        if updated is not None:
            if by_name and updated.rsplit(".", 1)[-1] == attribute:
                return True
        elif (target := receiver(call)) is not None and model.is_scaler(target):
            reached = model.scaler_instances(target)
            if not stepped or any(instance in stepped for instance in reached):
                return True
    return False
