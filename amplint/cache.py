"""A ruff-like cache of findings: a re-run over unchanged files parses nothing.

One JSON file per (amplint version, effective settings, selected codes) under
``<project root>/.amplint_cache/`` (the project root holds the configuration or
``pyproject.toml``; ``--cache-dir`` or ``AMPLINT_CACHE_DIR`` choose another directory). Like
ruff's, the directory ignores itself (a ``.gitignore`` of ``*``) and carries a
``CACHEDIR.TAG``, so neither git nor backup tools pick it up.

Each entry is keyed by the file's absolute path and holds its size, modification time and
content hash: an unchanged ``stat`` is trusted as is; a changed one is checked against the
content hash before the file is analysed again. Writes replace the file atomically, so
concurrent runs never see half a cache (the last writer wins, and both wrote complete,
correct entries). In a project run (see :mod:`amplint.engine.project`) an entry also names
the project files its findings were made from (stat and content hash, checked the same way)
and the files its imports looked for and did not find: a change to either re-checks the
file.

Beside it, a :class:`RunRecord` answers a re-run of the same command over an unchanged tree
from one small file: the ``stat`` of every file the run found and the findings it reported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from amplint import __version__
from amplint.findings import Finding, finding_from_dict, finding_to_dict
from amplint.hashing import hex_digest

CACHE_DIRECTORY = ".amplint_cache"
#: The environment variable that, like ``--cache-dir``, names the cache directory.
CACHE_DIR_ENV = "AMPLINT_CACHE_DIR"
#: https://bford.info/cachedir/: the first line is what backup tools look for.
_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by amplint.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_GITIGNORE = "# Automatically created by amplint: a cache of findings (`amplint clean`).\n*\n"


def content_hash(data: bytes) -> str:
    return hex_digest(data)


@dataclass
class Entry:
    """One file's cached findings, with the stat and content hash they hold for."""

    size: int
    mtime_ns: int
    digest: str
    findings: list[dict]  # type: ignore[type-arg]
    #: project files read: path -> [size, mtime_ns, content hash].
    deps: dict[str, list] = field(default_factory=dict)  # type: ignore[type-arg]
    #: project files looked for and absent.
    missing: list[str] = field(default_factory=list)


class FindingsCache:
    def __init__(self, cache_dir: Path, key: str) -> None:
        self.cache_dir = cache_dir
        self.directory = cache_dir / __version__
        self.path = self.directory / f"{key}.json"
        self._entries: dict[str, Entry] = {}
        self._dirty = False
        self._load()

    @staticmethod
    def key_for(fingerprint: str, selection: str) -> str:
        text = fingerprint + "|" + selection
        return hex_digest(text.encode(), size=12)

    def _load(self) -> None:
        import json  # a run with the cache off never needs it (see amplint.config)

        try:
            raw = json.loads(self.path.read_text("utf-8"))
            self._entries = {path: Entry(*values) for path, values in raw["files"].items()}
        except (OSError, ValueError, KeyError, TypeError):
            self._entries = {}  # missing or damaged: start afresh

    def lookup_by_stat(self, path: str, stat: os.stat_result) -> Entry | None:
        entry = self._entries.get(path)
        if entry is not None and entry.size == stat.st_size and entry.mtime_ns == stat.st_mtime_ns:
            return entry
        return None

    def entry(self, path: str) -> Entry | None:
        return self._entries.get(path)

    def digest_of(self, path: str) -> str | None:
        entry = self._entries.get(path)
        return entry.digest if entry is not None else None

    def lookup_by_content(self, path: str, digest: str, stat: os.stat_result) -> Entry | None:
        entry = self._entries.get(path)
        if entry is None or entry.digest != digest:
            return None
        entry.size, entry.mtime_ns = stat.st_size, stat.st_mtime_ns  # touched, not changed
        self._dirty = True
        return entry

    def store(self, path: str, stat: os.stat_result, digest: str, findings: list[Finding]) -> None:
        self._entries[path] = Entry(
            stat.st_size, stat.st_mtime_ns, digest, [finding_to_dict(f) for f in findings]
        )
        self._dirty = True

    def dependencies_hold(self, entry: Entry, is_module: Callable[[str], bool]) -> bool:
        """Whether the project files the entry was made from are as they were."""
        for path, (size, mtime_ns, digest) in entry.deps.items():
            try:
                stat = os.stat(path)
                if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
                    with open(path, "rb") as stream:
                        if content_hash(stream.read()) != digest:
                            return False
                    entry.deps[path] = [stat.st_size, stat.st_mtime_ns, digest]
                    self._dirty = True
            except OSError:
                return False
            if not is_module(path):
                return False
        return not any(is_module(path) for path in entry.missing)

    def store_dependencies(self, path: str, deps: dict[str, str], missing: set[str]) -> None:
        entry = self._entries.get(path)
        if entry is None:
            return
        for dep, digest in deps.items():
            try:
                stat = os.stat(dep)
            except OSError:
                continue
            entry.deps[dep] = [stat.st_size, stat.st_mtime_ns, digest]
        entry.missing = sorted(missing)

    @staticmethod
    def findings_of(entry: Entry, filename: str) -> list[Finding]:
        return [finding_from_dict(data, filename) for data in entry.findings]

    def save(self) -> None:
        if not self._dirty:
            return
        payload = {
            "files": {
                path: [e.size, e.mtime_ns, e.digest, e.findings]
                + ([e.deps, e.missing] if e.deps or e.missing else [])
                for path, e in self._entries.items()
            }
        }
        _write(self.cache_dir, self.path, payload)


class RunRecord:
    """What the last command run with these settings and this selection (the ``key``, the
    per-file cache's) reported, with its arguments, its working directory and the ``stat``
    of every file it found, hashed into one signature.

    A re-run of that command that finds the same files with the same ``stat`` reports the
    same findings: a run's findings are made from its files alone (a project's imports are
    resolved among them, and the settings are in the key). Comparing the stats of a tree is
    all such a re-run costs; the per-file cache, the project's index and the dependency
    checks are never loaded. Any change (a file edited, touched, added, removed or renamed)
    misses, and the run goes through the per-file cache as before. One record per key: a
    pre-commit hook names other files on each commit, and a record per command would pile
    up; another command replaces the record instead.
    """

    def __init__(self, cache_dir: Path, key: str) -> None:
        self.cache_dir = cache_dir
        self.path = cache_dir / __version__ / f"{key}.run.json"

    @staticmethod
    def signature(command: str, absolutes: Sequence[str]) -> str | None:
        """The command and its files' identity and ``stat``, hashed; None when a file
        cannot be read."""
        parts = [command]
        try:
            for path in absolutes:
                # Stricter than the per-file cache's size and mtime: the inode and ctime
                # also catch a file replaced by another with the same size and mtime.
                info = os.stat(path)
                stat = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
                parts.append(f"{path}\0{stat}")
        except OSError:
            return None
        return hex_digest("\n".join(parts).encode(errors="surrogateescape"))

    def findings(self, signature: str) -> list[Finding] | None:
        """The findings recorded for exactly these files, or None."""
        import json

        try:
            with open(self.path, encoding="utf-8") as stream:
                raw = json.load(stream)
            if raw["signature"] != signature:
                return None
            return [finding_from_dict(data, filename) for filename, data in raw["findings"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, signature: str, findings: Sequence[Finding]) -> None:
        payload = {
            "signature": signature,
            "findings": [[f.filename, finding_to_dict(f)] for f in findings],
        }
        _write(self.cache_dir, self.path, payload)

    def forget(self) -> None:
        """Drop the record: the run's outcome is not one a re-run may repeat."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _write(cache_dir: Path, path: Path, payload: object) -> None:
    """Replace ``path`` atomically with ``payload`` as JSON (a reader never sees half)."""
    import json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mark(cache_dir)
        import tempfile  # imported when saving: a --no-cache run never needs it

        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, separators=(",", ":"))
        os.replace(temporary, path)
    except OSError:
        # A cache that cannot be written only costs speed next time.
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(temporary)


def mark(cache_dir: Path) -> None:
    """Write the ``.gitignore`` and ``CACHEDIR.TAG`` that keep the cache out of the
    user's repository and backups (once; an existing file is left as it is)."""
    for name, text in ((".gitignore", _GITIGNORE), ("CACHEDIR.TAG", _TAG)):
        path = cache_dir / name
        if not path.exists():
            path.write_text(text, encoding="utf-8")


def is_amplint_cache(cache_dir: Path) -> bool:
    """Whether ``cache_dir`` is a cache amplint made: only such a directory is ever removed,
    whatever ``--cache-dir`` names."""
    # Caches written before the tag existed carry a README of this first line instead.
    for name, first_line in (
        ("CACHEDIR.TAG", _TAG.splitlines()[0]),
        ("README", "Created by amplint"),
    ):
        try:
            if (cache_dir / name).read_text(encoding="utf-8").startswith(first_line):
                return True
        except (OSError, UnicodeDecodeError):
            continue
    return False


def clean(cache_dir: Path) -> bool:
    """Remove an amplint cache directory; whether there was one."""
    if not cache_dir.is_dir() or not is_amplint_cache(cache_dir):
        return False
    import shutil

    shutil.rmtree(cache_dir, ignore_errors=True)
    return True
