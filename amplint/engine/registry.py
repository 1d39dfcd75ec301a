"""The one place that maps codes to rules. Rules register by living in ``amplint.rules``.

Selection and listing read ``amplint.catalog`` alone; this module imports the rule modules
(and so libcst) only when rules are about to run.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection, Iterable
from functools import cache
from types import ModuleType

import amplint.rules
from amplint.engine.contract import Rule, RuleDefinitionError


@cache
def all_rules() -> tuple[type[Rule], ...]:
    """Every rule, ordered by code."""
    modules = (
        importlib.import_module(f"amplint.rules.{info.name}")
        for info in pkgutil.iter_modules(amplint.rules.__path__)
    )
    return collect_rules(modules)


def collect_rules(modules: Iterable[ModuleType]) -> tuple[type[Rule], ...]:
    """The rule of each module, ordered by code; refuses a module without exactly one rule
    and a code claimed twice."""
    found: dict[str, type[Rule]] = {}
    for module in modules:
        defined = _rules_defined_in(module)
        if len(defined) != 1:
            raise RuleDefinitionError(
                f"module {module.__name__} must define exactly one rule, found {len(defined)}"
            )
        rule = defined[0]
        if rule.code in found:
            raise RuleDefinitionError(
                f"code {rule.code} is claimed by two rules: {found[rule.code].__module__} and "
                f"{rule.__module__}"
            )
        found[rule.code] = rule
    return tuple(found[code] for code in sorted(found))


def rules_for(codes: Collection[str]) -> list[type[Rule]]:
    """The rules of ``codes``, ordered by code, importing only their modules (each module
    spells its code and catalog name); any surprise defers to :func:`all_rules`."""
    return list(_rules_for(frozenset(codes)))


@cache
def _rules_for(codes: frozenset[str]) -> tuple[type[Rule], ...]:
    # Asked once per file with the same few selections: answered from memory after the first.
    return tuple(_find_rules(codes))


def _find_rules(codes: frozenset[str]) -> list[type[Rule]]:
    if all_rules.cache_info().currsize:  # type: ignore[attr-defined]
        return [rule for rule in all_rules() if rule.code in codes]
    from amplint.catalog import entry

    found = []
    for code in sorted(codes):
        known = entry(code)
        if known is None or not known.static:
            continue
        rule = _rule_in(f"{code.lower()}_{known.name.replace('-', '_')}", code)
        if rule is None:
            return [rule for rule in all_rules() if rule.code in codes]
        found.append(rule)
    return found


def _rule_in(module_name: str, code: str) -> type[Rule] | None:
    try:
        module = importlib.import_module(f"amplint.rules.{module_name}")
    except ModuleNotFoundError:
        return None
    defined = _rules_defined_in(module)
    return defined[0] if len(defined) == 1 and defined[0].code == code else None


def _rules_defined_in(module: ModuleType) -> list[type[Rule]]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Rule)
        and value.__module__ == module.__name__
        and "code" in value.__dict__
    ]


def rule_by_code(code: str) -> type[Rule] | None:
    return next((rule for rule in all_rules() if rule.code == code.upper()), None)
