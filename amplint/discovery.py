"""Turn the paths given on the command line into the Python files to check.

Directories are walked honouring ``.gitignore`` files (every level from the repository or
project root down, plus ``.git/info/exclude``), the default excluded directories and the
configuration's ``exclude``/``extend-exclude``. Paths named explicitly are checked even when a
``.gitignore`` or a default exclude would skip them, but a user's own ``exclude`` or
``extend-exclude`` pattern still applies to them, so a pre-commit hook that passes every
changed file respects the configuration; with ``force-exclude`` the default excludes do too.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from amplint.config import Settings, relative_to_root

if TYPE_CHECKING:
    import pathspec

__all__ = [
    "DEFAULT_EXCLUDES",
    "LINTED_SUFFIXES",
    "PYTHON_SUFFIXES",
    "Discovery",
    "discover",
    "is_excluded",
]

PYTHON_SUFFIXES = frozenset({".py", ".pyi"})
NOTEBOOK_SUFFIX = ".ipynb"
#: What a directory walk and an explicit path accept: Python files and Jupyter notebooks.
LINTED_SUFFIXES = PYTHON_SUFFIXES | {NOTEBOOK_SUFFIX}


def is_notebook(filename: str) -> bool:
    # Here, not in amplint.notebook: asking must not import the notebook machinery (a
    # one-file run of a plain module never needs it).
    return filename.endswith(NOTEBOOK_SUFFIX)


#: Skipped while walking unless ``exclude`` replaces them; ruff's list plus amplint's cache.
DEFAULT_EXCLUDES = (
    ".amplint_cache",
    ".bzr",
    ".direnv",
    ".eggs",
    ".git",
    ".git-rewrite",
    ".hg",
    ".ipynb_checkpoints",
    ".mypy_cache",
    ".nox",
    ".pants.d",
    ".pyenv",
    ".pytest_cache",
    ".pytype",
    ".ruff_cache",
    ".svn",
    ".tox",
    ".venv",
    ".vscode",
    "__pycache__",
    "__pypackages__",
    "_build",
    "buck-out",
    "build",
    "dist",
    "node_modules",
    "site-packages",
    "venv",
)


@dataclass
class Discovery:
    """What ``discover`` found: the files to check and the paths it could not use."""

    #: The files as shown: each below its argument as given (``src/a.py``), sorted.
    names: list[str] = field(default_factory=list)
    #: The same files' absolute paths, in the same order.
    absolutes: list[str] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)

    @cached_property
    def files(self) -> list[Path]:
        # Made on first use: a re-run answered by the cache's run record never needs them
        # (a Path costs more than the walk's own work for each file).
        return [Path(name) for name in self.names]


def discover(paths: Sequence[Path], settings: Settings) -> Discovery:
    """The sorted, de-duplicated Python files under ``paths``, and one-line errors."""
    walker = _Walker(settings)
    for path in paths:
        walker.visit_argument(Path(path))
    return walker.result()


def is_excluded(path: Path, settings: Settings) -> bool:
    """Whether a file named explicitly (``--stdin-filename``) is excluded, as a path argument
    would be."""
    return _Excludes(settings).excludes_argument(os.path.abspath(path), False)


# --------------------------------------------------------------------------- matching


def _compile(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    import pathspec  # imported on first use: a one-file check never needs it

    return pathspec.GitIgnoreSpec.from_lines(list(lines))


def _verdict(spec: pathspec.GitIgnoreSpec, relative: str) -> bool | None:
    """True: ignored, False: re-included by a ``!`` pattern, None: no pattern matched."""
    check = getattr(spec, "check_file", None)
    if check is not None:
        return check(relative).include
    # pathspec < 0.12 has no check_file: the last matching pattern decides, as in git.
    for pattern in reversed(spec.patterns):
        if pattern.include is not None and pattern.regex.match(relative):
            return bool(pattern.include)
    return None


def _is_bare_name(pattern: str) -> bool:
    return (
        bool(pattern) and not any(c in pattern for c in "/*?[]!\\#") and pattern.strip() == pattern
    )


def _is_anchored(line: str) -> bool:
    """Whether a gitignore line is tied to its base directory rather than any depth below it."""
    body = line.strip().removeprefix("!").rstrip("/")
    if body.startswith("**/"):
        body = body[3:]
    return "/" in body


class _Rules:
    """Gitignore-style lines, matched against the entries of a walk."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = tuple(lines)
        self._singles: list[tuple[bool, pathspec.GitIgnoreSpec]] | None = None

    @cached_property
    def spec(self) -> pathspec.GitIgnoreSpec:
        # Compiled on first use: checking one named file never needs the default exclusions.
        return _compile(self._lines)

    def verdict(self, relative: str, is_dir: bool) -> bool | None:
        """The verdict on ``relative`` or on any directory above it (a path's own exclusion)."""
        if not self._lines:
            return None
        return _verdict(self.spec, relative + "/" if is_dir else relative)

    def entry_verdict(self, relative: str, is_dir: bool) -> bool | None:
        """The verdict on a directory entry itself, not inherited from a directory above it.

        pathspec also matches everything below a matched directory. The walk never enters an
        ignored directory, so an inherited match only happens below a directory the user named
        explicitly (``amplint check build``), and there it must not hide the contents.
        """
        verdict = self.verdict(relative, is_dir)
        head, _, name = relative.rpartition("/")
        if verdict is None or not head or _verdict(self.spec, head + "/") is None:
            return verdict
        return self._direct_verdict(relative, head, name + "/" if is_dir else name, is_dir)

    def _direct_verdict(self, relative: str, head: str, leaf: str, is_dir: bool) -> bool | None:
        # Rare slow path, one line at a time: a floating line must match the entry's own name,
        # an anchored one must match the entry but not the directory holding it.
        path = relative + "/" if is_dir else relative
        for anchored, single in reversed(self._single_specs()):
            if not anchored:
                verdict = _verdict(single, leaf)
            elif _verdict(single, head + "/") is None:
                verdict = _verdict(single, path)
            else:
                verdict = None
            if verdict is not None:
                return verdict
        return None

    def _single_specs(self) -> list[tuple[bool, pathspec.GitIgnoreSpec]]:
        if self._singles is None:
            self._singles = [
                (_is_anchored(line), _compile([line])) for line in self._lines if line.strip()
            ]
        return self._singles


class _IgnoreFile(NamedTuple):
    """The patterns of one ignore file, matched relative to the directory it applies to."""

    base: str
    rules: _Rules


def _ignored_by(chain: Sequence[_IgnoreFile], path: str, is_dir: bool) -> bool:
    # Deeper files override shallower ones, so the first verdict from the end decides.
    for ignore_file in reversed(chain):
        relative = os.path.relpath(path, ignore_file.base).replace(os.sep, "/")
        verdict = ignore_file.rules.entry_verdict(relative, is_dir)
        if verdict is not None:
            return verdict
    return False


class _Excludes:
    """The default and configured exclusions, matched like ``.gitignore`` from the root."""

    def __init__(self, settings: Settings) -> None:
        self._root = os.path.abspath(settings.project_root)
        self._configured = settings.config_path is not None
        defaults = DEFAULT_EXCLUDES if settings.exclude is None else ()
        patterns = (*defaults, *(settings.exclude or ()), *settings.extend_exclude)
        self._all = _Rules(patterns)
        forced = defaults if settings.force_exclude else ()
        self._arguments = _Rules((*forced, *(settings.exclude or ()), *settings.extend_exclude))
        # The usual case, bare names (`.venv`, `build`): a set lookup on the entry's own name
        # gives the same verdict as matching every pattern, at a fraction of the cost.
        self._bare_names = frozenset(patterns) if all(_is_bare_name(p) for p in patterns) else None

    def excludes_argument(self, path: str, is_dir: bool) -> bool:
        """Whether a path named on the command line is excluded: by the user's patterns, and
        with ``force-exclude`` by the defaults too."""
        if path == self._root:
            return False
        relative = self._relative(path)
        # A directory pattern (`legacy/`) excludes the files named below it as well.
        if self._arguments.verdict(relative, is_dir):
            return True
        # Without a configuration the root is the argument's own folder, where `build` in
        # `build/gen.py` cannot be seen: match below the working directory too, as pre-commit
        # names files relative to it.
        if self._configured:
            return False
        below_cwd = relative_to_root(path, os.getcwd())
        return below_cwd not in (None, relative) and bool(
            self._arguments.verdict(below_cwd, is_dir)
        )

    def excludes_entry(self, path: str, is_dir: bool) -> bool:
        """Whether the walk skips an entry, by the default and the user's patterns."""
        if self._bare_names is not None:
            return os.path.basename(path) in self._bare_names
        return bool(self._all.entry_verdict(self._relative(path), is_dir))

    def _relative(self, path: str) -> str:
        # Outside the project only the basename can match (`.venv`, `build`, `*_pb2.py`).
        relative = relative_to_root(path, self._root)
        return os.path.basename(path) if relative is None else relative


# --------------------------------------------------------------------------- walking


def _repository_root(directory: str) -> str | None:
    """The nearest directory at or above ``directory`` that holds a ``.git`` entry."""
    current = directory
    while True:
        if os.path.lexists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _is_within(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


class _Walker:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._root = os.path.abspath(settings.project_root)
        self._excludes = _Excludes(settings)
        #: absolute path -> the name shown for it
        self._files: dict[str, str] = {}
        self._errors: list[tuple[Path, str]] = []
        self._ignore_cache: dict[str, _IgnoreFile | None] = {}
        self._visited_dirs: set[tuple[int, int]] = set()

    def result(self) -> Discovery:
        found = sorted(self._files.items(), key=lambda item: _posix(item[1]))
        return Discovery(
            names=[name for _, name in found],
            absolutes=[absolute for absolute, _ in found],
            errors=list(self._errors),
        )

    def _error(self, path: Path, reason: str) -> None:
        self._errors.append((path, reason))

    def _add(self, name: str, absolute: str) -> None:
        # Keep the first spelling of a file named twice (``src`` and ``./src/a.py``).
        self._files.setdefault(absolute, name)

    # -- explicit arguments

    def visit_argument(self, path: Path) -> None:
        if str(path) == "-":
            self._error(path, "reading from standard input ('-') is not supported")
            return
        absolute = os.path.abspath(path)
        try:
            mode = os.stat(absolute).st_mode
        except FileNotFoundError:
            self._error(path, "no such file or directory")
            return
        except OSError as exc:
            self._error(path, f"cannot access: {exc.strerror or exc}")
            return
        if stat.S_ISDIR(mode):
            if not self._excludes.excludes_argument(absolute, True):
                self._walk(str(path), absolute, self._chain_above(absolute))
        elif not stat.S_ISREG(mode):
            self._error(path, "not a regular file or directory")
        elif not self._excludes.excludes_argument(absolute, False):
            self._visit_explicit_file(path, absolute)

    def _visit_explicit_file(self, path: Path, absolute: str) -> None:
        # pre-commit's `types: [python]` also passes extension-less scripts with a python shebang.
        if path.suffix in LINTED_SUFFIXES or _has_python_shebang(absolute):
            self._add(str(path), absolute)
        else:
            self._error(path, "not a Python file (expected .py, .pyi or .ipynb)")

    # -- ignore files

    def _chain_above(self, directory: str) -> list[_IgnoreFile]:
        """The ignore files of every directory above ``directory`` that git would apply."""
        top = _repository_root(directory)
        if top is None:
            top = self._root if _is_within(directory, self._root) else directory
        chain = self._info_exclude(top)
        ancestors: list[str] = []
        current = os.path.dirname(directory)
        while _is_within(current, top) and current != directory:
            ancestors.append(current)
            if current == top:
                break
            current = os.path.dirname(current)
        chain.extend(f for d in reversed(ancestors) if (f := self._gitignore(d)) is not None)
        return chain

    def _info_exclude(self, repository: str) -> list[_IgnoreFile]:
        path = os.path.join(repository, ".git", "info", "exclude")
        loaded = self._load_ignore_file(path, repository)
        return [] if loaded is None else [loaded]

    def _gitignore(self, directory: str) -> _IgnoreFile | None:
        return self._load_ignore_file(os.path.join(directory, ".gitignore"), directory)

    def _load_ignore_file(self, path: str, base: str) -> _IgnoreFile | None:
        if path in self._ignore_cache:
            return self._ignore_cache[path]
        loaded = None
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    loaded = _IgnoreFile(base, _Rules(handle.read().splitlines()))
            except OSError as exc:
                self._error(Path(path), f"cannot read ignore file: {exc.strerror or exc}")
        self._ignore_cache[path] = loaded
        return loaded

    # -- directories

    def _walk(self, name: str, absolute: str, chain: list[_IgnoreFile]) -> None:
        identity = _directory_identity(absolute)
        if identity is None or identity in self._visited_dirs:
            # Already walked through another path (a symlink, possibly a loop): skip it.
            return
        self._visited_dirs.add(identity)
        try:
            entries = sorted(os.scandir(absolute), key=lambda entry: entry.name)
        except OSError as exc:
            self._error(Path(name), f"cannot read directory: {exc.strerror or exc}")
            return
        # The listing says whether the folder holds ignore files: no lookup per folder.
        listed = {entry.name for entry in entries if entry.name.startswith(".git")}
        if ".git" in listed:
            # A nested repository (submodule) ignores the ignore files of the outer one.
            chain = self._info_exclude(absolute)
        own = self._gitignore(absolute) if ".gitignore" in listed else None
        if own is not None:
            chain = [*chain, own]
        for entry in entries:
            self._visit_entry(name, entry, chain)

    def _visit_entry(self, parent: str, entry: os.DirEntry[str], chain: list[_IgnoreFile]) -> None:
        try:
            is_dir = entry.is_dir()
            is_file = not is_dir and entry.is_file()
        except OSError:
            return
        # The suffix is read off the name: most entries of a tree are dropped here.
        if not is_dir and not (is_file and os.path.splitext(entry.name)[1] in LINTED_SUFFIXES):
            return
        absolute = entry.path  # the directory was scanned by its absolute path
        if self._excludes.excludes_entry(absolute, is_dir):
            return
        if chain and _ignored_by(chain, absolute, is_dir):
            return
        # As ``Path(parent) / entry.name`` spells it, without making the Path.
        name = entry.name if parent == "." else os.path.join(parent, entry.name)
        if is_dir:
            self._walk(name, absolute, chain)
        else:
            self._add(name, absolute)


def _posix(name: str) -> str:
    return name if os.sep == "/" else name.replace(os.sep, "/")


def _directory_identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _has_python_shebang(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256)
    except OSError:
        return False
    return first.startswith(b"#!") and b"python" in first
