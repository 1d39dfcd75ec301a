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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from amplint.analysis.summary import AMP_WORDS, ModuleSummary, module_imports
from amplint.cache import content_hash
from amplint.engine.contract import Rule

#: The rules that look through imports. A file that lacks one of such a rule's words may
#: still get it from a module it imports (``train.py`` steps a scaler that ``helper.py``
#: builds), so the prefilter asks the imported modules' bytes too.
CROSS_MODULE_CODES = frozenset({"AMP002", "AMP006", "AMP013", "AMP014"})

_FROM_IMPORT = re.compile(
    rb"^[ \t]*from[ \t]+(\.*)[ \t]*([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)", re.MULTILINE
)
_IMPORT = re.compile(rb"^[ \t]*import[ \t]+([^\n#;]+)", re.MULTILINE)

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

    def __getstate__(self) -> dict[str, object]:
        # Sent to pool workers: what was read stays behind.
        state = dict(self.__dict__)
        state.update(_bytes={}, _summaries={}, _building=set(), _roots={})
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
        if level > 0:
            for _ in range(level - 1):
                directory = os.path.dirname(directory)
            bases = [directory]
            shortest = 0
        else:
            bases = list(dict.fromkeys((self.package_root(directory), directory)))
            shortest = 1
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

    def readmit(self, data: bytes, dropped: Sequence[type[Rule]]) -> list[type[Rule]]:
        """Of the rules the prefilter dropped, the cross-module ones whose words this file
        and the project modules it imports have between them."""
        from amplint.engine.prefilter import _Bytes

        dropped = [rule for rule in dropped if rule.code in CROSS_MODULE_CODES]
        if not dropped:
            return []
        sources = [_Bytes(data)]
        for path in self._imported_files(data, self.importer, follow_packages=True):
            blob = self.project.read(path)
            if blob is not None and AMP_WORDS.search(blob):
                self.deps[path] = content_hash(blob)
                sources.append(_Bytes(blob))
            elif blob is not None:
                self.deps[path] = content_hash(blob)
        if len(sources) == 1:
            return []
        return [
            rule
            for rule in dropped
            if all(any(source.has_group(group) for source in sources) for group in rule.tokens)
        ]

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
                blob = self.project.read(path)
                if blob is not None:
                    self.deps[path] = content_hash(blob)
                    for inner in self._imported_files(blob, path, follow_packages=False):
                        found[inner] = None
        return list(found)


def _import_targets(data: bytes) -> list[tuple[int, tuple[str, ...]]]:
    """``(level, dotted parts)`` of every name an import statement may bring in."""
    targets: list[tuple[int, tuple[str, ...]]] = []
    for match in _FROM_IMPORT.finditer(data):
        level = len(match.group(1))
        module = tuple(p for p in match.group(2).decode("ascii", "replace").split(".") if p)
        names = match.group(3).decode("ascii", "replace").strip("()\\ \t\r\n")
        for name in names.replace("\n", ",").split(","):
            name = name.strip(" \t\r\\()").split(" as ")[0].strip()
            if name.isidentifier():
                targets.append((level, (*module, name)))
        if module:
            targets.append((level, module))
    for match in _IMPORT.finditer(data):
        for name in match.group(1).decode("ascii", "replace").split(","):
            dotted = name.strip().split(" as ")[0].strip()
            parts = tuple(p for p in dotted.split(".") if p.isidentifier())
            if parts:
                targets.append((0, parts))
    return targets


def _summarise(data: bytes, path: str, view: FileView) -> ModuleSummary | None:
    """Parse and summarise one module; None when it cannot be parsed."""
    from amplint.engine.prefilter import inspect_code

    display = _display(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    imports = module_imports(tree)
    if not AMP_WORDS.search(data):
        return ModuleSummary(path=display, imports=imports)
    from amplint.analysis.model import ModuleModel
    from amplint.analysis.summary import summarise
    from amplint.engine.source import SourceError, parse

    facts = inspect_code(data)
    if facts.refusal is not None:
        return ModuleSummary(path=display, imports=imports)
    try:
        parsed = parse(data, syntax=facts.tree)
        model = ModuleModel(parsed.module, parsed.text, imports=view.imports())  # type: ignore[arg-type]
        return summarise(model, display, imports)
    except (SourceError, RecursionError):
        return ModuleSummary(path=display, imports=imports)


def _display(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative.replace(os.sep, "/")
