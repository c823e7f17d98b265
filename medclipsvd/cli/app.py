"""Entry point: builds the typer app from the command modules and turns our errors into messages."""
from __future__ import annotations

import importlib
import sys

import typer

from medclipsvd.cli.options import hide_flag_types, reflow_help

hide_flag_types()

app = typer.Typer(
    name="medclipsvd",
    help=(
        "Adapt CLIP and BiomedCLIP to biomedical images by fine-tuning only singular values (CLIP-SVD).\n\n"
        "Start with:\n\n"
        "  medclipsvd demo\n"
        "  medclipsvd train --pipeline breast_ultrasound \\\n    --data-root DATA_ROOT --output runs/busi"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each exposes register(app).
COMMAND_MODULES = ["core", "engine", "interpret", "data", "tracking", "export"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"medclipsvd.cli.{_name}").register(app)
reflow_help(app)


DEBUG_ENV = "MEDCLIPSVD_DEBUG"  # set to 1 to see the traceback of an unexpected error


def one_line(exc: BaseException) -> str:
    """The message of an error as one line. A failed data check carries a per-class report (printed in
    full by `data check`); here it is summed up with its first problem and the command for the report."""
    report = getattr(exc, "report", None)
    if report is not None and getattr(report, "issues", None) and not report.problems:  # the splits as a whole
        args = getattr(report, "check_args", "") or f"--pipeline {report.dataset} --data-root {report.root}"
        return f"{' '.join(report.issues[0].split())} `medclipsvd data check {args}` prints the per-class report."
    if report is not None and hasattr(report, "problems"):
        counts = ", ".join(f"{report.total(k)} {k}" for k in ("missing", "unreadable", "mislabelled")
                           if report.total(k))
        first = report.problems[0] if report.problems else None
        example = f" (first: [{first.split}] {first.path}: {first.reason})" if first else ""
        hint = ("fix the split file or the class list" if report.total("mislabelled") else
                "complete the data, or pass --allow-missing to drop and count them")
        args = getattr(report, "check_args", "") or f"--pipeline {report.dataset} --data-root {report.root}"
        return (f"{report.dataset}: {counts or 'problems'} entries under {report.root}{example}; {hint}. "
                f"`medclipsvd data check {args}` prints the per-class report.")
    text = " ".join(str(exc).split())  # newlines and runs of spaces from wrapped messages
    return text or type(exc).__name__


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    # Python prints a warning as two lines (source location + code); users need the message only
    typer.secho(f"warning: {' '.join(str(message).split())}", err=True, fg=typer.colors.YELLOW)


def _close_progress_bars() -> None:
    """End any tqdm bar still open (the frames of the exception being reported keep it alive): its line is
    finished first, so the error starts a line of its own instead of being glued to the bar."""
    tq = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tq, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error
            pass


def _error(message: str) -> None:
    _close_progress_bars()
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def run(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return its exit status.

    Every failure is one line on stderr and a non-zero status: our errors (``MedClipSVDError``) exit 2,
    a usage error exits 2 (click), a file system error names the path and exits 1, an interrupt exits 130,
    anything unexpected exits 1 with a hint to rerun with MEDCLIPSVD_DEBUG=1 for the traceback."""
    import os
    import warnings

    from medclipsvd.errors import MedClipSVDError

    debug = os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    previous = warnings.showwarning
    if not debug:
        warnings.showwarning = _warning_line
    import click

    try:  # recent typer vendors its own copy of click: catch its classes and click's
        from typer._click import exceptions as _tcx
    except ImportError:  # pragma: no cover - older typer uses click itself
        _tcx = click.exceptions
    exit_types = (click.exceptions.Exit, typer.Exit)
    abort_types = (click.exceptions.Abort, typer.Abort)
    usage_types = (click.ClickException, _tcx.ClickException)

    try:
        # standalone_mode=False: click raises its usage errors instead of printing a boxed multi-line panel
        rv = app(args=argv, prog_name="medclipsvd", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except exit_types as exc:
        return exc.exit_code
    except abort_types:
        _error("interrupted.")
        return 130
    except usage_types as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `medclipsvd` / `medclipsvd data` alone: the help
            typer.echo(exc.format_message())
            return 0
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "medclipsvd"
        _error(f"{one_line(exc.format_message()).rstrip('.')}; see `{where} --help`.")
        return exc.exit_code
    except MedClipSVDError as exc:
        if debug:
            raise
        _error(one_line(exc))
        return 2
    except KeyboardInterrupt:
        _error("interrupted.")
        return 130
    except MemoryError:
        if debug:
            raise
        _error("out of memory; use a smaller --batch-size or images, or a machine with more memory.")
        return 1
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        _error(f"{exc.strerror or one_line(exc)}{where}; check the path, its permissions and the free space there.")
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        if debug:
            raise
        _error(f"unexpected {type(exc).__name__}: {one_line(exc)[:300]}. This is a bug or an input medclipsvd "
               f"does not check yet: rerun with {DEBUG_ENV}=1 for the traceback and report it.")
        return 1
    finally:
        warnings.showwarning = previous
    return rv if isinstance(rv, int) else 0  # a command's `raise typer.Exit(n)` comes back as n


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
