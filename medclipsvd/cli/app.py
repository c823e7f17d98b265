"""Entry point: builds the typer app from the command modules and turns our errors into messages."""
from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="medclipsvd",
    help=(
        "Adapt CLIP and BiomedCLIP to biomedical images by fine-tuning only singular values "
        "(CLIP-SVD). Start with `medclipsvd demo`, then `medclipsvd train --pipeline chest_xray`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command group; each exposes register(app).
COMMAND_MODULES = ["core", "engine", "interpret", "data", "tracking", "export"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"medclipsvd.cli.{_name}").register(app)


def main() -> None:
    from medclipsvd.errors import MedClipSVDError

    try:
        app()
    except MedClipSVDError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
