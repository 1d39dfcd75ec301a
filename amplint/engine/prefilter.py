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
from dataclasses import dataclass
from functools import cache

from amplint.engine.contract import Rule

#: A token that starts with this marks a part of a name (``"~scaler"``: any identifier that
#: contains "scaler", in any case), for rules that recognise objects by how they are named.
PART = "~"
#: A token that starts with this names a keyword argument given a literal:
#: ``"=precision:16-mixed"`` is ``precision="16-mixed"`` (or ``precision=16-mixed`` for an
#: int or bool, written as Python prints it), for rules about configuration switches. The
#: raw-bytes stage looks for ``name=value`` written on one line (a value spelled with
#: escapes, split by implicit concatenation or over lines is missed: a miss, never a finding).
KEYWORD = "="
#: A token that starts with this names a module the code imports (``"^lightning"``:
#: ``import lightning``, ``from lightning.pytorch import ...``). The raw-bytes stage looks
#: for ``import NAME`` / ``from NAME`` (a name later in ``import a, b`` is missed).
IMPORTED = "^"


_IDENTIFIER_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class _Bytes:
    """The raw bytes, searched once per word however many rules ask about it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._lower: bytes | None = None
        self._known: dict[str, bool] = {}
        #: words not even present as substrings: no word containing one can be present.
        self._missing: list[bytes] = []

    def has_group(self, group: tuple[str, ...]) -> bool:
        return any(self.has(word) for word in group)

    def has(self, word: str) -> bool:
        known = self._known.get(word)
        if known is None:
            known = self._known[word] = self._search(word)
        return known

    def _search(self, word: str) -> bool:
        if word.startswith(IMPORTED):
            name = word[1:]
            return self.has(name) and _imports(self.data, name.encode())
        if word.startswith(KEYWORD):
            name, _, value = word[1:].partition(":")
            return self.has(name) and _keyword_pattern(name, value).search(self.data) is not None
        if word.startswith(PART):
            if self._lower is None:
                self._lower = self.data.lower()
            return word[1:].lower().encode() in self._lower
        encoded = word.encode()
        if any(missing in encoded for missing in self._missing):
            return False
        data = self.data
        end = len(data)
        start = data.find(encoded)
        if start < 0:
            self._missing.append(encoded)
            return False
        # bytes.find is a fast C scan; the word-boundary test runs only where it matched
        # (a regex with look-behinds cannot skip ahead and is ~50x slower here).
        while start >= 0:
            after = start + len(encoded)
            if (start == 0 or data[start - 1] not in _IDENTIFIER_BYTES) and (
                after == end or data[after] not in _IDENTIFIER_BYTES
            ):
                return True
            start = data.find(encoded, start + 1)
        return False


@cache
def _keyword_pattern(name: str, value: str) -> re.Pattern[bytes]:
    """``name=value`` / ``name = "value"`` as written on one line."""
    return re.compile(
        rb"\b"
        + re.escape(name.encode())
        + rb"[ \t]*=[ \t]*[\"']?"
        + re.escape(value.encode())
        + rb"(?![\w-])"
    )


def _imports(data: bytes, name: bytes) -> bool:
    for lead in (b"import ", b"from "):
        start = data.find(lead + name)
        while start >= 0:
            after = start + len(lead) + len(name)
            if after == len(data) or data[after] not in _IDENTIFIER_BYTES:
                return True
            start = data.find(lead + name, start + 1)
    return False


def may_fire(
    data: bytes, rules: Sequence[type[Rule]], source: _Bytes | None = None
) -> list[type[Rule]]:
    """Stage 1: rules whose token groups all occur in the raw bytes as whole words (or,
    for name parts, anywhere). ``source`` is ``_Bytes(data)`` to search (and keep)."""
    source = source or _Bytes(data)
    return [rule for rule in rules if all(source.has_group(group) for group in rule.tokens)]


#: libcst's native parser recurses without a guard: nesting beyond what CPython itself
#: accepts can overflow its stack and kill the process, so such files never reach it.
MAX_BRACKET_DEPTH = 150
#: Syntax nodes above which a file is not analysed. Large files are parsed in pieces cut
#: between statements, but one huge statement (a 20k-line table literal) is parsed whole,
#: at several KiB of libcst working memory per node.
MAX_SYNTAX_NODES = 200_000


@dataclass
class CodeFacts:
    """What CPython's ``ast`` tells about a file before libcst is trusted with it."""

    #: identifiers used in code; None when ``ast`` could not parse the file.
    names: set[str] | None = None
    #: a reason not to hand the file to libcst at all (too deep, too large).
    refusal: str | None = None
    #: where ``ast`` located its error, for the diagnostic.
    position: tuple[int, int] = (1, 1)
    #: the tree itself, handed on so that later stages (cutting a large file into pieces,
    #: placing findings by line) need not parse again.
    tree: ast.Module | None = None


def inspect_code(data: bytes) -> CodeFacts:
    """Identifiers in code, or why the file must not be parsed with libcst."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            tree = ast.parse(data)
    except (RecursionError, MemoryError):
        return CodeFacts(refusal="source is nested too deeply to analyse")
    except SyntaxError as error:
        position = (error.lineno or 1, error.offset or 1)
        if "too many" in str(error.msg) or _bracket_depth(data) > MAX_BRACKET_DEPTH:
            return CodeFacts(refusal=f"SyntaxError: {error.msg}", position=position)
        return CodeFacts()  # perhaps newer syntax than this Python's: libcst decides
    except ValueError:  # NUL bytes and the like: libcst's reading gives the diagnostic
        return CodeFacts()
    found: set[str] = set()
    count = 0
    for node in ast.walk(tree):
        count += 1
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
        elif node_type is ast.keyword and node.arg:  # type: ignore[attr-defined]
            value = node.value  # type: ignore[attr-defined]
            if type(value) is ast.Constant and isinstance(value.value, (str, int)):
                found.add(f"{KEYWORD}{node.arg}:{value.value}")  # type: ignore[attr-defined]
    if count > MAX_SYNTAX_NODES:
        return CodeFacts(
            names=found,
            refusal=f"file too large to analyse ({count:,} syntax nodes; "
            f"the limit is {MAX_SYNTAX_NODES:,})",
        )
    return CodeFacts(names=found, tree=tree)


def _bracket_depth(data: bytes) -> int:
    """Deepest bracket nesting, counted naively (brackets in strings count too: an
    overestimate errs on the side of not crashing)."""
    depth = deepest = 0
    for byte in data:
        if byte in b"([{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b")]}":
            depth = max(0, depth - 1)
    return deepest


def identifiers(data: bytes) -> set[str] | None:
    """Every identifier used in the code, or None when ``ast`` cannot parse it."""
    return inspect_code(data).names


def may_fire_in_code(names: set[str], rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    """Stage 2: rules whose token groups all occur among the code's identifiers."""
    lowered: list[str] | None = None

    def has(word: str) -> bool:
        nonlocal lowered
        if word.startswith(IMPORTED):
            return word[1:] in names
        if not word.startswith(PART):
            return word in names
        if lowered is None:
            lowered = [name.lower() for name in names]
        part = word[1:].lower()
        return any(part in name for name in lowered)

    return [
        rule for rule in rules if all(any(has(word) for word in group) for group in rule.tokens)
    ]


def candidate_rules(
    data: bytes, rules: Sequence[type[Rule]], source: _Bytes | None = None
) -> tuple[list[type[Rule]], CodeFacts | None]:
    """Both stages: the rules that may fire on ``data``, and what ``ast`` said (None when
    stage 1 already excluded every rule). ``source``: see :func:`may_fire`."""
    candidates = may_fire(data, rules, source)
    if not candidates:
        return [], None
    facts = inspect_code(data)
    if facts.names is None:
        return candidates, facts
    return may_fire_in_code(facts.names, candidates), facts
