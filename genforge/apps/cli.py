"""`genforge app <name> ...`: one sub-group per reference application.

Each application package registers its commands on the shared `app` group with `register(group)`;
like the stage modules, they import nothing heavy at the top, so `genforge --help` stays instant.
"""

import importlib

import typer

APP_MODULES: list[str] = [
    "genforge.apps.monitor.cli",
    "genforge.apps.recommend.cli",
    "genforge.apps.support.cli",
]


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Reference applications built from the stages (support, monitor, recommend).",
                        no_args_is_help=True)
    app.add_typer(group, name="app")
    for module in APP_MODULES:
        importlib.import_module(module).register(group)
