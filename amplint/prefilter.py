"""Deciding cheaply that a file cannot produce a finding, so it is never parsed with libcst.

Two stages, both sound for rules whose ``tokens`` are identifiers (names, attributes,
imported names) — which every rule's are, since the analysis only resolves identifiers:

1. the raw bytes must contain every token group of some selected rule, as whole words;
2. CPython's ``ast`` (much faster than libcst) must show those words as identifiers in
   code, not only in strings, comments or docstrings.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence
from functools import cache

from amplint.rules.base import Rule


@cache
def _token_pattern(words: tuple[str, ...]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(word.encode()) for word in words)
    return re.compile(rb"(?<![A-Za-z0-9_])(?:" + alternatives + rb")(?![A-Za-z0-9_])")


def may_fire(data: bytes, rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    """Stage 1: rules whose token groups all occur in the raw bytes as whole words.

    The substring test runs first because it is much cheaper than the regex.
    """
    return [
        rule
        for rule in rules
        if all(
            any(word.encode() in data for word in group) and _token_pattern(group).search(data)
            for group in rule.tokens
        )
    ]


def identifiers(data: bytes) -> set[str] | None:
    """Every identifier used in the code, or None when ``ast`` cannot parse it (then libcst,
    which knows newer syntax and gives the proper diagnostic, decides)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            tree = ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    found: set[str] = set()
    for node in ast.walk(tree):
        node_type = type(node)
        if node_type is ast.Name:
            found.add(node.id)  # type: ignore[attr-defined]
        elif node_type is ast.Attribute:
            found.add(node.attr)  # type: ignore[attr-defined]
        elif node_type is ast.alias:
            found.update(node.name.split("."))  # type: ignore[attr-defined]
            if node.asname:  # type: ignore[attr-defined]
                found.add(node.asname)  # type: ignore[attr-defined]
        elif node_type is ast.ImportFrom and node.module:  # type: ignore[attr-defined]
            found.update(node.module.split("."))  # type: ignore[attr-defined]
    return found


def may_fire_in_code(names: set[str], rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    """Stage 2: rules whose token groups all occur among the code's identifiers."""
    return [
        rule for rule in rules if all(any(word in names for word in group) for group in rule.tokens)
    ]


def candidate_rules(data: bytes, rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    """Both stages: the rules that may fire on ``data``."""
    candidates = may_fire(data, rules)
    if not candidates:
        return []
    names = identifiers(data)
    if names is None:
        return candidates
    return may_fire_in_code(names, candidates)
