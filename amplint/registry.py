"""The one place that maps codes to rules. Rules register by living in ``amplint.rules``."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import amplint.rules
from amplint.rules.base import Rule


@cache
def all_rules() -> tuple[type[Rule], ...]:
    for module_info in pkgutil.iter_modules(amplint.rules.__path__):
        if module_info.name != "base":
            importlib.import_module(f"amplint.rules.{module_info.name}")
    found = {rule.code: rule for rule in _subclasses(Rule) if "code" in rule.__dict__}
    return tuple(found[code] for code in sorted(found))


def _subclasses(cls: type[Rule]) -> list[type[Rule]]:
    result = []
    for sub in cls.__subclasses__():
        result.append(sub)
        result.extend(_subclasses(sub))
    return result


def rule_by_code(code: str) -> type[Rule] | None:
    return next((rule for rule in all_rules() if rule.code == code.upper()), None)


def known_codes() -> tuple[str, ...]:
    return tuple(rule.code for rule in all_rules())


def default_codes() -> tuple[str, ...]:
    return tuple(rule.code for rule in all_rules() if rule.default_enabled)
