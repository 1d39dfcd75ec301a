"""The project: the files being checked, seen as modules that import one another.

Given a directory or several files, ``amplint check`` lets the analysis of ``train.py`` see
what ``helper.py`` makes (``init_opt()`` returns a GradScaler), what ``utils.py``'s
checkpoint helper saves, and which autocast dtype a module picks. It stays cheap and
certain:

- an import is followed only to a file of the project (one being checked; for the language
  server, an open buffer or a file on disk under the workspace), found the way Python
  would: relative to the importing package, or from the package root or the script's own
  directory; an import that could mean two files means neither;
- a module is read only when a file being analysed imports it, and summarised (see
  :mod:`amplint.analysis.summary`) only when a rule asks about one of its names; ``torch``
  itself is never a project module (amplint's symbol table says what torch is);
- each file's :class:`FileView` records what it read (paths and content digests) and which
  files it looked for and did not find, so the findings cache re-checks ``train.py`` when
  ``helper.py`` changes or appears.

A file checked on its own gets no project: it is analysed exactly as before.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from amplint.cache import content_hash

if TYPE_CHECKING:
    # Type names only: a run that no file's prefilter lets through never loads libcst.
    from amplint.analysis.summary import ModuleSummary
    from amplint.engine.contract import Rule
    from amplint.engine.prefilter import CodeFacts, SourceWords

#: The rules that look through imports. A file that lacks one of such a rule's words may
#: still get it from a module it imports (``train.py`` steps a scaler that ``helper.py``
#: builds), so the prefilter asks the imported modules' bytes too.
CROSS_MODULE_CODES = frozenset({"AMP001", "AMP002", "AMP006", "AMP013", "AMP014"})
#: The words of a rule an imported module may stand in for: what one module hands another.
_IMPORTABLE = frozenset(
    {
        "GradScaler",
        "ShardedGradScaler",
        "autocast",
        "state_dict",
        "load_state_dict",
        "~scaler",
        "backward",  # a helper of another module that runs the backward pass (AMP001)
    }
)
_CHECKPOINT_WORDS = frozenset({"state_dict", "load_state_dict"})
#: Importable words an imported module's summary must back, not its bytes alone: the words
#: its code must hold to be worth summarising, and what the summary must say.
#: The summary is asked about the names the file imports from the module (None: the module
#: itself is imported, and any of its names may be used).
_Backer = Callable[["ModuleSummary", "set[str] | None"], bool]
_SUMMARISED: dict[str, tuple[tuple[str, ...], _Backer]] = {
    "autocast": (("autocast",), lambda summary, names: summary.makes_autocast(names)),
    # `torch.autograd.grad` runs a backward pass too.
    "backward": (("backward", "grad"), lambda summary, names: summary.runs_backward(names)),
}
#: What a file must show itself for a rule to see through its imports: `step` is in every
#: training file, so AMP002 looks further only where this file scales a loss.
_OWN_HINTS = {"AMP002": (b".scale(", b".unscale_(")}
#: A summary parses a module's imports and the statements that mention AMP words; in a
#: module above this many bytes it gives up (imports are still followed): a project's
#: helpers are small, and a large library module would cost a second to parse.
MAX_SUMMARY_BYTES = 100_000
#: Folders above an importer looked at for the namespace package an import names.
_NAMESPACE_DEPTH = 8

# Import statements, found by their keyword (a pattern that starts with a literal skips
# ahead in C; one anchored at line starts tries every byte): see _statements.
_FROM_IMPORT = re.compile(rb"from[ \t]+(\.*)[ \t]*([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)")
_IMPORT = re.compile(rb"import[ \t]+([^\n#;]+)")

#: Reads a file's bytes (an open buffer first, for the language server); None if absent.
Reader = Callable[[str], "bytes | None"]


class Project:
    """The modules of a project, summarised on demand and memoised for the process.

    ``members``: absolute paths of the files being checked (None: any file on disk, for the
    language server). ``read``: a reader to try before the disk (open buffers). ``stable``:
    files do not change during the object's life (a CLI run), so a summary is made once per
    file; otherwise it is kept per content digest.
    """

    def __init__(
        self,
        members: Iterable[str] | None,
        read: Reader | None = None,
        *,
        stable: bool = True,
    ) -> None:
        self.members = None if members is None else frozenset(members)
        self._overlay = read
        self._stable = stable
        self._bytes: dict[str, bytes | None] = {}
        self._summaries: dict[str, tuple[str, ModuleSummary | None, dict[str, str]]] = {}
        self._building: set[str] = set()
        self._roots: dict[str, str] = {}
        self._words: dict[tuple[str, str], SourceWords | None] = {}
        self._digests: dict[str, str] = {}
        self._package_imports: dict[str, tuple[list[str], frozenset[str]]] = {}
        self._located: dict[
            tuple[str, int, tuple[str, ...]], tuple[tuple[str, int] | None, frozenset[str]]
        ] = {}
        self._common: str | None = None

    def __getstate__(self) -> dict[str, object]:
        # Sent to pool workers: what was read stays behind.
        state = dict(self.__dict__)
        state.update(
            _bytes={},
            _summaries={},
            _building=set(),
            _roots={},
            _words={},
            _digests={},
            _package_imports={},
            _located={},
        )
        return state

    # -- files -------------------------------------------------------------------------------

    def is_module(self, path: str) -> bool:
        if self.members is not None:
            return path in self.members
        if self._overlay is not None and self._overlay(path) is not None:
            return True
        return os.path.isfile(path)

    def read(self, path: str) -> bytes | None:
        if self._stable and path in self._bytes:
            return self._bytes[path]
        data = self._overlay(path) if self._overlay is not None else None
        if data is None:
            try:
                with open(path, "rb") as stream:
                    data = stream.read()
            except OSError:
                data = None
        if self._stable:
            self._bytes[path] = data
        return data

    def package_root(self, directory: str) -> str:
        """The first directory above the package ``directory`` is in (itself if none)."""
        known = self._roots.get(directory)
        if known is None:
            current = directory
            while os.path.isfile(os.path.join(current, "__init__.py")):
                parent = os.path.dirname(current)
                if parent == current:
                    break
                current = parent
            known = self._roots[directory] = current
        return known

    # -- imports -----------------------------------------------------------------------------

    def locate(
        self, importer: str, level: int, parts: tuple[str, ...], missing: set[str] | None = None
    ) -> tuple[str, int] | None:
        """The file of the longest prefix of ``parts`` that is a project module, and how
        many parts it took; None when there is none, or two different ones."""
        directory = os.path.dirname(importer)
        if not self._stable:
            return self._locate(directory, level, parts, missing)
        # The modules of a folder import the same few names (`os`, `typing`, a sibling):
        # each is looked for once per folder.
        key = (directory, level, parts)
        known = self._located.get(key)
        if known is None:
            looked: set[str] = set()
            found = self._locate(directory, level, parts, looked)
            known = self._located[key] = (found, frozenset(looked))
        if missing is not None:
            missing |= known[1]
        return known[0]

    def _locate(
        self, directory: str, level: int, parts: tuple[str, ...], missing: set[str] | None
    ) -> tuple[str, int] | None:
        if level > 0:
            for _ in range(level - 1):
                directory = os.path.dirname(directory)
            bases = [directory]
            shortest = 0
        else:
            bases = list(dict.fromkeys((self.package_root(directory), directory)))
            shortest = 1
        located = self._locate_in(bases, parts, shortest, missing)
        if level > 0:
            return located
        inside = self._in_namespace_package(directory, parts, missing)
        if inside is not None and (located is None or inside[1] > located[1]):
            return inside
        if located is not None:
            return located
        # A script in a folder that is no package (yolov5's `segment/train.py`) importing the
        # project's top-level packages (`from utils.general import ...`) puts the project's
        # root on sys.path itself: the folders above it, up to the files checked, are tried.
        top = self._top()
        above = os.path.dirname(directory)
        while top is not None and (above == top or above.startswith(top + os.sep)):
            if above not in bases:
                located = self._locate_in([above], parts, 1, missing)
                if located is not None:
                    return located
            if above == top:
                break
            above = os.path.dirname(above)
        return None

    def _in_namespace_package(
        self, directory: str, parts: tuple[str, ...], missing: set[str] | None
    ) -> tuple[str, int] | None:
        """``from train import utils`` in ``train/train.py`` where ``train/`` has no
        ``__init__.py``: Python 3 makes the folder a namespace package when the folder above
        it is on sys.path (``python -m train.train``), so the import names a sibling module,
        not an attribute of the script that happens to share the folder's name."""
        if len(parts) < 2:
            return None
        current = directory
        for _ in range(_NAMESPACE_DEPTH):
            parent = os.path.dirname(current)
            if parent == current:
                return None
            if os.path.basename(current) == parts[0]:
                located = self._locate_in([parent], parts, 2, missing)
                if located is not None:
                    return located
            current = parent
        return None

    def _top(self) -> str | None:
        """The folder holding every file checked (None: no fixed set, as in an editor)."""
        if self.members is None or not self.members:
            return None
        if self._common is None:
            self._common = os.path.commonpath(list(self.members))
        return self._common

    def _locate_in(
        self,
        bases: list[str],
        parts: tuple[str, ...],
        shortest: int,
        missing: set[str] | None,
    ) -> tuple[str, int] | None:
        for used in range(len(parts), shortest - 1, -1):
            found = set()
            for base in bases:
                stem = os.path.join(base, *parts[:used])
                candidates = (
                    (stem + ".py", os.path.join(stem, "__init__.py"))
                    if used
                    else (os.path.join(stem, "__init__.py"),)
                )
                for candidate in candidates:
                    if self.is_module(candidate):
                        found.add(candidate)
                    elif missing is not None:
                        missing.add(candidate)
            if len(found) == 1:
                return found.pop(), used
            if found:
                return None  # `a.py` beside `a/__init__.py`, or two roots: ambiguous
        return None

    def summary(self, path: str) -> tuple[ModuleSummary | None, dict[str, str]]:
        """The module's summary and the files (path -> digest) it was made from."""
        data = self.read(path)
        if data is None:
            return None, {}
        known = self._summaries.get(path)
        if known is not None and (self._stable or known[0] == content_hash(data)):
            return known[1], known[2]
        if path in self._building:
            return None, {}  # an import cycle: no facts through it
        self._building.add(path)
        try:
            digest = content_hash(data)
            view = FileView(self, path)
            summary = _summarise(data, path, view)
            deps = {path: digest, **view.deps}
        finally:
            self._building.discard(path)
        self._summaries[path] = (digest, summary, deps)
        return summary, deps

    def digest(self, path: str, data: bytes) -> str:
        if not self._stable:
            return content_hash(data)
        known = self._digests.get(path)
        if known is None:
            known = self._digests[path] = content_hash(data)
        return known

    def words(self, path: str, data: bytes) -> SourceWords | None:
        from amplint.analysis.summary import has_amp_words
        from amplint.engine.prefilter import SourceWords

        key = (path, content_hash(data) if not self._stable else "")
        if key not in self._words:
            self._words[key] = SourceWords(data) if has_amp_words(data) else None
        return self._words[key]

    def view(self, path: str) -> FileView:
        return FileView(self, os.path.abspath(path))


@dataclass
class FileView:
    """The project as one importing file sees it; records what the file's analysis read."""

    project: Project
    importer: str
    #: path -> content digest of every project file this file's findings depend on.
    deps: dict[str, str] = field(default_factory=dict)
    #: files looked for and not found: if one appears, the findings may change.
    missing: set[str] = field(default_factory=set)

    def locate(self, importer: str, level: int, parts: tuple[str, ...]) -> tuple[str, int] | None:
        return self.project.locate(importer, level, parts, self.missing)

    def summary(self, path: str) -> ModuleSummary | None:
        summary, deps = self.project.summary(path)
        self.deps.update(deps)
        return summary

    def imports(self) -> object:
        """The evaluator's lookup for this file."""
        from amplint.analysis.imported import ProjectImports

        return ProjectImports(self, self.importer)

    def readmit(
        self,
        data: bytes,
        dropped: Sequence[type[Rule]],
        own: SourceWords | None = None,
        facts: CodeFacts | None = None,
    ) -> list[type[Rule]]:
        """Of the rules the prefilter dropped, the cross-module ones that this file and the
        project modules it imports have the words of between them.

        Only the names of objects another module can hand over (a GradScaler, an autocast,
        a checkpoint's ``state_dict``) may come from an import; the rule's other words must
        be in this file's code, as the prefilter's second stage asks.
        """
        from amplint.engine.prefilter import SourceWords, code_identifiers, may_fire_in_code

        own = own or SourceWords(data)

        def in_code(group: tuple[str, ...]) -> bool:
            """Whether the group's words may be this file's own, in its code: not only in
            comments (why the prefilter's first stage drops a rule whose words the bytes
            hold), nor, where ``ast`` has looked, only in strings or data. A group the file
            holds only there may still come from an import. Where ``ast`` has not looked
            (every rule dropped on the bytes), a word in a string counts: the second stage
            below then rules on it."""
            if not own.has_group(group) or not own.may_be_code(group):
                return False
            if facts is None or facts.names is None:
                return True
            return bool(may_fire_in_code(facts.names, [_Group(group)], live=facts.live))

        candidates = []
        for rule in dropped:
            if rule.code not in CROSS_MODULE_CODES:
                continue
            hints = _OWN_HINTS.get(rule.code)
            if hints is not None and not any(hint in data for hint in hints):
                continue
            missing: list[tuple[str, ...]] = []
            for group in _cheap_first(rule):
                if not in_code(group):
                    if not _importable(group):
                        break
                    missing.append(group)
            else:
                # This file must hold more than a checkpoint's `state_dict` of its own: a file
                # that takes every group from imports (a region and a backward helper, both
                # imported) is left out, or every file of a library would look through its
                # imports.
                present = [g for g in rule.tokens if g not in missing]
                if any(set(g) - _CHECKPOINT_WORDS for g in present):
                    candidates.append((rule, missing))
        if not candidates:
            return []
        sources = [
            (path, blob)
            for path in self._imported_files(data, self.importer, follow_packages=True)
            if (blob := self._words(path)) is not None
        ]
        # Every missing group must have a module that may provide it before any module's
        # summary is asked whether it really does.
        holding = {
            group: self._holding(group, sources) for _, missing in candidates for group in missing
        }
        candidates = [
            (rule, missing)
            for rule, missing in candidates
            if all(holding[group] for group in missing)
        ]
        if not candidates:  # most files: no imported module holds the words at all
            return []
        names_from = self._imported_names(data)
        candidates = [
            (rule, missing)
            for rule, missing in candidates
            if all(self._provides(group, holding[group], names_from) for group in missing)
        ]
        if not candidates:
            return []
        # The prefilter's second stage for this file's own share of the words.
        names, exact = (facts.names, True) if facts is not None else code_identifiers(data, own)
        if names is None:
            return [rule for rule, _ in candidates]
        live = facts.live if facts is not None else None
        return [
            rule
            for rule, missing in candidates
            if may_fire_in_code(
                names, [_Without(rule, missing)], literals_unknown=not exact, live=live
            )
        ]

    def _imported_names(self, data: bytes) -> dict[str, set[str] | None]:
        """Project module -> the names this file imports from it; None where it imports the
        module itself (``import utils``, ``from pkg import utils``), whose every name it
        may then use."""
        found: dict[str, set[str] | None] = {}
        for level, module, name in _scanned_imports(data).values():
            parts = tuple(part for part in module.split(".") if part)
            if level == 0 and parts[:1] == ("torch",):
                continue
            if name is not None:
                whole = self.locate(self.importer, level, (*parts, name))
                if whole is not None and whole[1] == len(parts) + 1:
                    found[whole[0]] = None  # a module of the package
                    continue
            located = self.locate(self.importer, level, parts) if parts else None
            if located is None or located[1] != len(parts):
                continue
            if name is None:
                found[located[0]] = None
            elif (names := found.setdefault(located[0], set())) is not None:
                names.add(name)
        return found

    def _provides(
        self,
        group: tuple[str, ...],
        holding: list[str],
        names_from: dict[str, set[str] | None],
    ) -> bool:
        """Whether one of the imported modules ``holding`` the group's words (see
        :meth:`_holding`) may hand this file what the group names. For an autocast region
        and a helper that runs the backward pass the word is not enough (dynamo's modules say
        both everywhere, a project's `utils` lends other names): the module's summary must
        hold one among the names imported from it, as the analysis will ask it (see
        :meth:`_imported_names`)."""
        backing = _backing(group)
        if backing is None:
            return bool(holding)
        says_so = backing[1]
        for path in holding:
            summary = self.summary(path)
            # A module reached through a package's `__init__` may lend any of its names.
            if summary is not None and says_so(summary, names_from.get(path)):
                return True
        return False

    def _holding(self, group: tuple[str, ...], sources: list[tuple[str, SourceWords]]) -> list[str]:
        """The imported modules that hold the group's words (in code, and not too large to
        be summarised, where a summary must back them)."""
        from amplint.engine.prefilter import SourceWords

        holding = [(path, blob) for path, blob in sources if blob.has_group(group)]
        backing = _backing(group)
        if backing is None:
            return [path for path, _ in holding]
        in_code = backing[0]
        found = []
        for path, blob in holding:
            if not _summarised_in_full(blob.data):
                continue
            # Most modules that say it do so in strings and comments (torch's error messages):
            # those are not summarised.
            code = blob.code_only()
            if code is None or SourceWords(code).has_group(in_code):
                found.append(path)
        return found

    def _words(self, path: str) -> SourceWords | None:
        """The module's bytes, searchable, when they hold any AMP word; recorded as read."""
        data = self.project.read(path)
        if data is None:
            return None
        self.deps[path] = self.project.digest(path, data)
        return self.project.words(path, data)

    def _package_imports(self, path: str) -> list[str]:
        """The project modules a package's ``__init__.py`` imports (what it may re-export)."""
        blob = self.project.read(path)
        if blob is None:
            return []
        self.deps[path] = self.project.digest(path, blob)
        known = self.project._package_imports.get(path) if self.project._stable else None
        if known is None:
            inner = FileView(self.project, path)
            files = inner._imported_files(blob, path, follow_packages=False)
            known = (files, frozenset(inner.missing))
            if self.project._stable:
                self.project._package_imports[path] = known
        self.missing |= known[1]
        return known[0]

    def _imported_files(self, data: bytes, importer: str, *, follow_packages: bool) -> list[str]:
        """Project files that ``data``'s import statements name (as a cheap text scan);
        a package's ``__init__.py`` adds the modules it imports in turn (re-exports)."""
        found: dict[str, None] = {}
        for level, parts in _import_targets(data):
            if level == 0 and parts[0] == "torch":
                continue
            located = self.locate(importer, level, parts)
            if located is None:
                continue
            path = located[0]
            found[path] = None
            if follow_packages and path.endswith("__init__.py"):
                for inner in self._package_imports(path):
                    found[inner] = None
        return list(found)


def _statements(pattern: re.Pattern[bytes], data: bytes) -> Iterator[re.Match[bytes]]:
    """The matches of ``pattern`` that start a line (after spaces and tabs), as the same
    pattern anchored with ``^[ \t]*`` under ``re.MULTILINE`` would find them."""
    match = pattern.search(data)
    while match is not None:
        start = match.start()
        line = data.rfind(b"\n", 0, start) + 1
        if data[line:start].strip(b" \t"):
            match = pattern.search(data, start + 1)  # inside a line: look on
        else:
            yield match
            match = pattern.search(data, match.end())


def _scanned_imports(data: bytes) -> dict[str, tuple[int, str, str | None]]:
    """:func:`~amplint.analysis.summary.module_imports` by a text scan, for modules with no
    AMP word (most of a library): what each import statement binds, as written."""
    found: dict[str, tuple[int, str, str | None]] = {}
    for match in _statements(_FROM_IMPORT, data):
        level = len(match.group(1))
        module = match.group(2).decode("ascii", "replace")
        names = match.group(3).decode("ascii", "replace").strip("()\\ \t\r\n")
        for item in names.replace("\n", ",").split(","):
            name, _, alias = item.strip(" \t\r\\()").partition(" as ")
            name, alias = name.strip(), alias.strip()
            if name.isidentifier():
                found[alias if alias.isidentifier() else name] = (level, module, name)
    for match in _statements(_IMPORT, data):
        for item in match.group(1).decode("ascii", "replace").split(","):
            dotted, _, alias = item.strip().partition(" as ")
            dotted, alias = dotted.strip(), alias.strip()
            if not all(part.isidentifier() for part in dotted.split(".")):
                continue
            if alias.isidentifier():
                found[alias] = (0, dotted, None)
            else:
                top = dotted.split(".")[0]
                found[top] = (0, top, None)
    return found


_ORDERED: dict[str, tuple[tuple[str, ...], ...]] = {}


def _cheap_first(rule: type[Rule]) -> tuple[tuple[str, ...], ...]:
    """The rule's token groups in the order that ends the look soonest: first the groups no
    import can stand in for (a missing one ends it), then those matched by plain searches
    before those needing a keyword-literal regex; otherwise rarest first, as the
    prefilter's word table orders them (torch's files say `scale` everywhere, AMP006's
    clipping words almost nowhere)."""
    ordered = _ORDERED.get(rule.code)
    if ordered is None:
        from amplint.engine.prefilter import KEYWORD, words_of

        # The table may order the words inside a group differently: groups are matched as
        # sets, and the rule's own tuples are kept (readmission compares them).
        rarity = {
            frozenset(group): rank
            for rank, group in enumerate(dict(words_of([rule.code])).get(rule.code, ()))
        }
        ordered = _ORDERED[rule.code] = tuple(
            sorted(
                rule.tokens,
                key=lambda group: (
                    _importable(group),
                    any(word.startswith(KEYWORD) for word in group),
                    rarity.get(frozenset(group), len(rarity)),
                ),
            )
        )
    return ordered


def _backing(group: tuple[str, ...]) -> tuple[tuple[str, ...], _Backer] | None:
    """What an imported module's summary must back for ``group`` (see ``_SUMMARISED``)."""
    from amplint.engine.prefilter import bare

    words = {bare(word) for word in group}
    return next((backing for word, backing in _SUMMARISED.items() if word in words), None)


@cache
def _importable(group: tuple[str, ...]) -> bool:
    """Whether an imported module may stand in for the group (``!autocast`` is ``autocast``
    counted only outside data: an imported autocast factory counts all the same)."""
    from amplint.engine.prefilter import bare

    return any(bare(word) in _IMPORTABLE for word in group)


class _Group:
    """One token group, as a rule of its own (for the prefilter's stage 2)."""

    def __init__(self, group: tuple[str, ...]) -> None:
        self.tokens = (group,)


class _Without:
    """A rule's token groups less those an import provides (for the prefilter's stage 2)."""

    def __init__(self, rule: type[Rule], missing: list[tuple[str, ...]]) -> None:
        self.tokens = tuple(group for group in rule.tokens if group not in missing)


def _import_targets(data: bytes) -> list[tuple[int, tuple[str, ...]]]:
    """``(level, dotted parts)`` of every name an import statement may bring in."""
    targets: list[tuple[int, tuple[str, ...]]] = []
    for match in _statements(_FROM_IMPORT, data):
        level = len(match.group(1))
        module = tuple(p for p in match.group(2).decode("ascii", "replace").split(".") if p)
        names = match.group(3).decode("ascii", "replace").strip("()\\ \t\r\n")
        for name in names.replace("\n", ",").split(","):
            name = name.strip(" \t\r\\()").split(" as ")[0].strip()
            if name.isidentifier():
                targets.append((level, (*module, name)))
        if module:
            targets.append((level, module))
    for match in _statements(_IMPORT, data):
        for name in match.group(1).decode("ascii", "replace").split(","):
            dotted = name.strip().split(" as ")[0].strip()
            parts = tuple(p for p in dotted.split(".") if p.isidentifier())
            if parts:
                targets.append((0, parts))
    return targets


def _summarised_in_full(data: bytes) -> bool:
    """Whether the module's summary reads more than its imports (a large library module's
    does not: not worth reading)."""
    return len(data) <= MAX_SUMMARY_BYTES


def _summarise(data: bytes, path: str, view: FileView) -> ModuleSummary | None:
    """Parse and summarise one module; None when it cannot be parsed."""
    from amplint.analysis.summary import ModuleSummary, has_amp_words, module_imports
    from amplint.engine.prefilter import inspect_code

    display = _display(path)
    if not _summarised_in_full(data) and os.path.basename(path) != "__init__.py":
        return ModuleSummary(path=display)  # a large library module: not worth reading
    if not _summarised_in_full(data) or not has_amp_words(data):
        # Nothing to summarise (or too much) but what it imports and may re-export: a text
        # scan will do.
        return ModuleSummary(path=display, imports=_scanned_imports(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    imports = module_imports(tree)
    relevant = _relevant_source(data, tree)
    if relevant is None:
        return ModuleSummary(path=display, imports=imports)
    from amplint.analysis.model import ModuleModel
    from amplint.analysis.summary import summarise
    from amplint.engine.source import SourceError, parse

    facts = inspect_code(relevant)
    if facts.refusal is not None:
        return ModuleSummary(path=display, imports=imports)
    try:
        parsed = parse(relevant, syntax=facts.tree)
        model = ModuleModel(parsed.module, parsed.text, imports=view.imports())  # type: ignore[arg-type]
        return summarise(model, display, imports)
    except (SourceError, RecursionError):
        return ModuleSummary(path=display, imports=imports)
    except Exception:
        # A module this run only reads for facts must never take down the check of the file
        # that imports it: without its summary, that file is analysed as on its own.
        return ModuleSummary(path=display, imports=imports)


def _relevant_source(data: bytes, tree: ast.Module) -> bytes | None:
    """The module with only its imports and the top-level statements that mention AMP
    words left in (the others blanked, so lines keep their numbers); None when no statement
    does, or what is left is too large to be worth a summary.

    A 200 KB library module that defines one autocast helper costs the parse of that helper.
    """
    from amplint.analysis.summary import has_amp_words

    if not has_amp_words(data):
        return None
    lines = data.splitlines(keepends=True)
    # A coding cookie stays: it says how the rest is decoded.
    keep = [number < 2 and line.startswith(b"#") for number, line in enumerate(lines)]
    relevant = False
    for statement in tree.body:
        first = min(
            [statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", ()))]
        )
        last = statement.end_lineno or statement.lineno
        chunk = b"".join(lines[first - 1 : last])
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            wanted = True
        else:
            wanted = bool(has_amp_words(chunk))
            relevant = relevant or wanted
        if wanted:
            keep[first - 1 : last] = [True] * (last - first + 1)
    if not relevant:
        return None
    kept = b"".join(line if keep[number] else _blank(line) for number, line in enumerate(lines))
    return kept if len(kept) - kept.count(b"\n") <= MAX_SUMMARY_BYTES else None


def _blank(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return b"\r\n"
    return b"\n" if line.endswith((b"\n", b"\r")) else b""


def _display(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative.replace(os.sep, "/")
