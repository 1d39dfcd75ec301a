"""The ``amplint`` command line: a thin click layer over :mod:`amplint.api`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from amplint import __version__, api
from amplint.config import ConfigError, Settings, load_settings
from amplint.output import FORMATS, emit, emit_statistics
from amplint.progress import Progress

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UserError(click.ClickException):
    """A one-line error for the user; exits 2 like every amplint error."""

    exit_code = EXIT_ERROR


def _codes_option(name: str, help_text: str):  # type: ignore[no-untyped-def]
    return click.option(
        name,
        multiple=True,
        metavar="CODES",
        help=f"{help_text} Comma-separated codes or prefixes (AMP001, AMP0, ALL).",
    )


def _split(values: Sequence[str]) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(
        part.strip().upper() for value in values for part in value.split(",") if part.strip()
    )


def _common_options(function):  # type: ignore[no-untyped-def]
    options = [
        click.argument("paths", nargs=-1, type=click.Path(path_type=Path)),
        _codes_option("--select", "Rules to enable (replaces the configured selection)."),
        _codes_option("--ignore", "Rules to disable."),
        _codes_option("--extend-select", "Rules to enable in addition to the selection."),
        click.option(
            "--config",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Configuration file (pyproject.toml with [tool.amplint], or amplint.toml).",
        ),
        click.option(
            "--output-format",
            type=click.Choice(FORMATS),
            default="concise",
            show_default=True,
            help="How findings are printed.",
        ),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings remain."),
        click.option("--statistics", is_flag=True, help="Count findings per code instead."),
        click.option("--show-fixes", is_flag=True, help="List the fixes applied per file."),
        click.option("--no-cache", is_flag=True, help="Do not read or write a cache."),
        click.option("--unsafe-fixes", is_flag=True, help="Also apply fixes marked unsafe."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _prepare(
    paths: Sequence[Path],
    config: Path | None,
    select: Sequence[str],
    ignore: Sequence[str],
    extend_select: Sequence[str],
) -> tuple[list[Path], Settings, api.Selection]:
    targets = list(paths) or [Path(".")]
    api.tune_collector()
    try:
        settings = load_settings(config, targets[0] if len(targets) == 1 else Path("."))
    except ConfigError as error:
        raise UserError(str(error)) from error
    selection = api.Selection(_split(select), _split(ignore), _split(extend_select))
    return targets, settings, selection


def _resolve(selection: api.Selection, settings: Settings) -> frozenset[str]:
    try:
        return selection.codes(settings)
    except ConfigError as error:
        raise UserError(str(error)) from error


def _report(result: api.RunResult, output_format: str, statistics: bool, **emit_options) -> None:  # type: ignore[no-untyped-def]
    for path, reason in result.errors:
        click.echo(f"amplint: error: {path}: {reason}", err=True)
    stream = sys.stdout
    if statistics:
        emit_statistics(result.findings, stream, unsafe_fixes=emit_options["unsafe_fixes"])
    else:
        emit(output_format, result.findings, stream, **emit_options)


def _exit_status(result: api.RunResult, exit_zero: bool, fixed_is_failure: bool = False) -> int:
    if result.errors:
        return EXIT_ERROR
    if exit_zero:
        return EXIT_CLEAN
    if result.findings or (fixed_is_failure and result.fixed):
        return EXIT_FINDINGS
    return EXIT_CLEAN


class _AmplintGroup(click.Group):
    """Click's usage errors become one line on stderr and exit 2, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[no-untyped-def, override]
        try:
            result = super().main(args, prog_name or "amplint", complete_var, False, **extra)
        except click.exceptions.Abort:
            click.echo("amplint: aborted", err=True)
            sys.exit(130)
        except click.ClickException as error:
            click.echo(f"amplint: error: {error.format_message()}", err=True)
            sys.exit(EXIT_ERROR)
        except BrokenPipeError:
            sys.exit(EXIT_CLEAN)
        sys.exit(result if isinstance(result, int) else EXIT_CLEAN)


@click.group(cls=_AmplintGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="amplint")
def cli() -> None:
    """Find and fix misuse of PyTorch Automatic Mixed Precision."""


@cli.command()
@_common_options
def check(
    paths: tuple[Path, ...],
    select: tuple[str, ...],
    ignore: tuple[str, ...],
    extend_select: tuple[str, ...],
    config: Path | None,
    output_format: str,
    exit_zero: bool,
    statistics: bool,
    show_fixes: bool,
    no_cache: bool,
    unsafe_fixes: bool,
) -> None:
    """Report AMP misuse in PATHS (default: the current directory)."""
    targets, settings, selection = _prepare(paths, config, select, ignore, extend_select)
    interactive = output_format in ("concise", "full") and not statistics
    with Progress(enabled=interactive) as progress:
        try:
            result = api.check_paths(
                targets,
                settings,
                selection,
                use_cache=not no_cache,
                progress=progress.update,
                # Only JSON and SARIF carry a fix's edits; the rest need its title alone.
                with_edits=output_format in ("json", "sarif"),
            )
        except ConfigError as error:
            raise UserError(str(error)) from error
    _report(result, output_format, statistics, show_fixes=show_fixes, unsafe_fixes=unsafe_fixes)
    sys.exit(_exit_status(result, exit_zero))


@cli.command()
@_common_options
@click.option("--diff", is_flag=True, help="Print the fixes as a diff instead of writing them.")
@click.option(
    "--exit-non-zero-on-fix", is_flag=True, help="Exit 1 when a file was fixed (for pre-commit)."
)
def fix(
    paths: tuple[Path, ...],
    select: tuple[str, ...],
    ignore: tuple[str, ...],
    extend_select: tuple[str, ...],
    config: Path | None,
    output_format: str,
    exit_zero: bool,
    statistics: bool,
    show_fixes: bool,
    no_cache: bool,
    unsafe_fixes: bool,
    diff: bool,
    exit_non_zero_on_fix: bool,
) -> None:
    """Apply fixes to PATHS in place; what cannot be fixed is reported."""
    targets, settings, selection = _prepare(paths, config, select, ignore, extend_select)
    codes = _resolve(selection, settings)
    result = api.fix_paths(targets, settings, codes, unsafe=unsafe_fixes, write=not diff)
    if diff:
        for path, reason in result.errors:
            click.echo(f"amplint: error: {path}: {reason}", err=True)
        click.echo("".join(result.diffs), nl=False)
        fixes = sum(result.fixed.values())
        if fixes:
            click.echo(f"Would fix {fixes} error{'s' if fixes != 1 else ''}.", err=True)
        sys.exit(EXIT_ERROR if result.errors else EXIT_FINDINGS if result.diffs else EXIT_CLEAN)
    _report(
        result,
        output_format,
        statistics,
        show_fixes=show_fixes,
        fixed=result.fixed,
        unsafe_fixes=unsafe_fixes,
    )
    sys.exit(_exit_status(result, exit_zero, fixed_is_failure=exit_non_zero_on_fix))


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown"]),
    default="text",
    help="markdown: the table kept in README.md.",
)
def rules(fmt: str) -> None:
    """List every rule: code, name, fixable, default-on."""
    click.echo(rules_table(markdown=fmt == "markdown"), nl=False)


def rules_table(*, markdown: bool = False) -> str:
    from amplint.engine.registry import all_rules

    header = ("code", "name", "fix", "default", "summary")
    rows = [
        (
            rule.code,
            rule.name,
            "yes" if rule.fixable else "no",
            "yes" if rule.default_enabled else "no",
            rule.summary,
        )
        for rule in all_rules()
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


@cli.command()
@click.argument("code")
def rule(code: str) -> None:
    """Print the documentation of rule CODE."""
    from amplint.engine.registry import rule_by_code

    found = rule_by_code(code)
    if found is None:
        raise UserError(f"unknown rule code: {code}")
    click.echo(found.documentation(), nl=False)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def clean(paths: tuple[Path, ...]) -> None:
    """Remove the .amplint_cache directory (of PATHS' project, default: here)."""
    from amplint.cache import clean as remove_cache

    try:
        settings = load_settings(None, paths[0] if paths else Path("."))
    except ConfigError as error:
        raise UserError(str(error)) from error
    root = api.cache_root(settings)
    if remove_cache(root):
        click.echo(f"Removed cache at {root / '.amplint_cache'}", err=True)


@cli.command()
def server() -> None:
    """Run the language server over stdio (diagnostics and quick fixes in editors)."""
    try:
        from amplint.lsp.server import serve
    except ImportError as error:
        raise UserError(f"`amplint server` needs pygls: install amplint[lsp] ({error})") from error
    serve()


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--mode", type=click.Choice(["warn", "raise", "log"]), default="warn", show_default=True
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here."
)
@click.option(
    "--health/--no-health",
    default=True,
    show_default=True,
    help="Numerical-health checks (AMP101-AMP107) and the summary at exit.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write a PNG of the loss scale and skipped steps (needs matplotlib: amplint[plot]).",
)
@click.option("--every", type=click.IntRange(min=1), help="Steps between lazy reads [16].")
@click.option(
    "--overflow-margin",
    type=click.FloatRange(0, 1),
    help="AMP105 at |float16 output| >= 65504*(1-margin), or non-finite [0.5].",
)
@click.option("--min-scale", type=click.FloatRange(min=0), help="AMP102 below this scale [1].")
@click.option(
    "--max-backoffs",
    type=click.IntRange(min=1),
    help="AMP102 after this many backoffs in a row [12].",
)
@click.option(
    "--skip-rate", type=click.FloatRange(0, 1), help="AMP103 skipped share over the window [0.25]."
)
@click.option("--skip-window", type=click.IntRange(min=1), help="AMP103 window in steps [100].")
@click.option(
    "--underflow-share",
    type=click.FloatRange(0, 1),
    help="AMP104 share of gradients below float16's smallest normal [0.1].",
)
@click.option(
    "--underflow-every",
    type=click.IntRange(min=1),
    help="AMP104 gradient counts on one step in this many [16].",
)
@click.option(
    "--startup-steps", type=click.IntRange(min=0), help="AMP107 silent for these first steps [100]."
)
@click.option(
    "-m",
    "as_module",
    is_flag=True,
    help="SCRIPT is a module name, run as `python -m SCRIPT ARGS` runs it.",
)
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    mode: str,
    report_path: str | None,
    health: bool,
    plot_path: str | None,
    as_module: bool,
    script: str,
    args: tuple[str, ...],
    **thresholds: float | int | None,
) -> None:
    """Run SCRIPT like `python SCRIPT ARGS` (with -m: `python -m SCRIPT ARGS`) with amplint's
    runtime checks installed."""
    try:
        from amplint.runtime.runner import exit_as_python, run_script
    except ImportError as error:
        raise UserError(f"`amplint run` needs torch: install amplint[runtime] ({error})") from error
    chosen = {name: value for name, value in thresholds.items() if value is not None}
    # Ctrl-C ends amplint run as it ends `python SCRIPT`: by SIGINT, so shell loops stop.
    exit_as_python(
        run_script(
            script,
            list(args),
            mode=mode,
            report_path=report_path,
            health=health,
            thresholds=chosen,
            plot_path=plot_path,
            module=as_module,
        )
    )


#: The console-script entry point.
main = cli
