"""Assemble a corpus of real PyTorch training code and run `amplint check` over it.

The corpus lives in a cache folder outside the repository (nothing of it is committed):

- the wheels (or, where there is no wheel, the sdists) of PyTorch training libraries,
  fetched with `pip download --no-deps` and unpacked;
- the HEAD trees of public training repositories already mirrored on this machine
  (bare git directories, e.g. `/work/.mirror/OWNER+NAME/repo`), exported (the .py files of HEAD).

Then it runs `amplint check --no-cache --output-format json` over the whole corpus and
prints files, lines, time and the findings per code. `--findings PATH` keeps the JSON for
judging (see the "Wild corpus" section of benchmarks/README.md).

    python benchmarks/wild_corpus.py [--cache DIR] [--mirrors DIR] [--findings PATH]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

# Libraries that train with torch: trainers, model zoos and the fine-tuning kits built on
# them. Kept in the order of the issue so the corpus is easy to compare between runs.
LIBRARIES = (
    "transformers",
    "accelerate",
    "pytorch-lightning",
    "lightning-fabric",
    "timm",
    "diffusers",
    "peft",
    "trl",
    "torchtune",
    "mmengine",
    "ultralytics",
    "pytorch-ignite",
    "fastai",
    "mosaicml",
    "deepspeed",
    "colossalai",
    "open_clip_torch",
    "sentence-transformers",
    "monai",
    "speechbrain",
    "kornia",
    "torchrl",
    "torchtnt",
    "yolov5",
    "mmdet",
    "mmsegmentation",
    "lightly",
    "pytorch-metric-learning",
    "flair",
    "nemo-toolkit",
    "fairseq2",
)

# Public repositories with training loops; the mirror folder holds `OWNER+NAME/repo`.
REPOSITORIES = (
    "pytorch/examples",
    "karpathy/nanoGPT",
    "facebookresearch/mae",
    "facebookresearch/dinov2",
    "facebookresearch/detectron2",
    "facebookresearch/SlowFast",
    "microsoft/Swin-Transformer",
    "facebookresearch/deit",
    "Lightning-AI/litgpt",
)


def download(name: str, archives: Path) -> Path | None:
    """The newest wheel of NAME, else its sdist; None when the registry has neither."""
    target = archives / name
    existing = sorted(target.glob("*")) if target.exists() else []
    if existing:
        return existing[0]
    target.mkdir(parents=True, exist_ok=True)
    for extra in (["--only-binary", ":all:"], ["--no-binary", ":all:", "--no-build-isolation"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "-d",
                str(target),
                *extra,
                name,
            ],
            capture_output=True,
            text=True,
        )
        found = sorted(target.glob("*"))
        if result.returncode == 0 and found:
            return found[0]
    print(f"  {name}: not available ({result.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
    return None


def unpack(archive: Path, destination: Path) -> None:
    """Only the .py members: the corpus is code, and data files waste the cache."""
    if destination.exists():
        return
    partial = destination.with_name(destination.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if member.endswith(".py") and ".." not in Path(member).parts:
                    zipped.extract(member, partial)
    else:
        with tarfile.open(archive) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and m.name.endswith(".py") and ".." not in Path(m.name).parts
            ]
            tar.extractall(partial, members=members, filter="data")
    partial.rename(destination)


def export_mirror(repository: str, mirrors: Path, destination: Path) -> bool:
    git_dir = mirrors / repository.replace("/", "+") / "repo"
    if destination.exists():
        return True
    if not git_dir.exists():
        print(f"  {repository}: no mirror at {git_dir}", file=sys.stderr)
        return False
    partial = destination.with_name(destination.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    # Only .py blobs, read one by one: a snapshot may leave its largest (data) files out,
    # which makes a plain `git archive HEAD` fail.
    git = ["git", "--git-dir", str(git_dir)]
    listing = subprocess.run(
        [*git, "ls-tree", "-r", "-z", "HEAD"], capture_output=True, check=True
    ).stdout
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        mode, kind, blob = meta.split()
        relative = Path(name.decode("utf-8", "surrogateescape"))
        if (
            kind != b"blob"
            or mode == b"120000"
            or relative.suffix != ".py"
            or ".." in relative.parts
        ):
            continue
        content = subprocess.run([*git, "cat-file", "blob", blob.decode()], capture_output=True)
        if content.returncode != 0:
            continue
        target = partial / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.stdout)
    partial.rename(destination)
    return True


def count_lines(tree: Path) -> tuple[int, int]:
    files = lines = 0
    for path in tree.rglob("*.py"):
        if path.is_file():
            files += 1
            lines += path.read_bytes().count(b"\n")
    return files, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "amplint-wild")
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--findings", type=Path, help="write the JSON findings here")
    args = parser.parse_args()
    cache: Path = args.cache.expanduser().resolve()
    archives = cache / "archives"
    corpus = cache / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)

    for name in LIBRARIES:
        archive = download(name, archives)
        if archive is not None:
            unpack(archive, corpus / "lib" / name)
    for repository in REPOSITORIES:
        export_mirror(repository, args.mirrors, corpus / "repo" / repository.replace("/", "+"))

    files, lines = count_lines(corpus)
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "amplint",
            "check",
            "--no-cache",
            "--exit-zero",
            "--output-format",
            "json",
            ".",
        ],
        cwd=corpus,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0 or "Traceback" in result.stderr:
        raise SystemExit(f"amplint check failed:\n{result.stderr[-2000:]}")
    findings = json.loads(result.stdout or "[]")
    if args.findings:
        args.findings.write_text(json.dumps(findings, indent=1))

    # Either part may be missing: no library fetched, no repository mirrored here.
    sources = [
        p.name
        for part in ("lib", "repo")
        if (corpus / part).is_dir()
        for p in sorted((corpus / part).iterdir())
    ]
    print(f"corpus   {cache}")
    print(f"sources  {len(sources)}: {', '.join(sources)}")
    print(f"files    {files:,}")
    print(f"lines    {lines:,}")
    print(f"time     {seconds:.1f} s ({lines / seconds / 1e6:.2f} M lines/s)")
    per_code = collections.Counter(f["code"] for f in findings)
    print(f"findings {len(findings)}")
    for code, count in sorted(per_code.items()):
        print(f"  {code}  {count}")


if __name__ == "__main__":
    main()
