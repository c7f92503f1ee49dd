"""CLI registration for the data stage (filled in by the data-stage work)."""

import typer


def register(app: typer.Typer) -> None:
    data = typer.Typer(help="Prepare raw text: clean, scrub PII, deduplicate, split; pack token files.",
                       no_args_is_help=True)
    app.add_typer(data, name="data")
