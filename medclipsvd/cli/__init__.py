"""The `medclipsvd` command line. Each module adds one command group to the typer app."""
