"""CLI registration: `genforge federated classify|sft|pretrain ...` and `genforge federated --recipe FILE`."""

from pathlib import Path
from typing import Annotated

import typer

from genforge.federated.config import FederatedClassifyConfig, FederatedPretrainConfig, FederatedSftConfig

FEDERATED_FLAGS = "--clients 8 --rounds 10 --partition dirichlet --alpha 0.5 --strategy fedprox --local-steps 20"


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command, friendly_errors

    group = typer.Typer(help="Train one model over data silos that never leave their owners (Flower): the "
                             "centralized command's flags plus --clients, --rounds, --partition, --strategy "
                             "and client-level differential privacy.", invoke_without_command=True)

    @group.callback()
    @friendly_errors
    def recipe(ctx: typer.Context, recipe: Annotated[Path | None, typer.Option(
            "--recipe", help="YAML: `task` (classify|sft|pretrain), its config keys and a `federated:` "
                             "section")] = None) -> None:
        if ctx.invoked_subcommand is not None:
            return
        if recipe is None:
            typer.echo(ctx.get_help())
            raise typer.Exit(0)
        from genforge.federated.config import FederatedRecipeConfig
        from genforge.federated.run import federated_recipe

        federated_recipe(FederatedRecipeConfig(recipe=recipe))

    app.add_typer(group, name="federated")
    add_stage_command(group, "classify", FederatedClassifyConfig, run="genforge.federated.run:federated_classify",
                      help="Federated text classification: `finetune classify` on every silo, one global model.",
                      examples=[f"genforge federated classify --model MINILM_DIR --data train.csv --out runs/fed "
                                f"{FEDERATED_FLAGS} --lora-r 8 --lr 5e-4",
                                "genforge federated classify --model MINILM_DIR --partition by-file --clients 2 "
                                "--client-data branch_a.csv --client-data branch_b.csv --val-data val.csv "
                                "--out runs/fed --dp-noise 1.0"])
    add_stage_command(group, "sft", FederatedSftConfig, run="genforge.federated.run:federated_sft",
                      help="Federated SFT of a causal LM on each silo's dialogues (LoRA: only adapters travel).",
                      examples=["genforge federated sft --model runs/lm --data dialogues.jsonl --out runs/fed-chat "
                                "--clients 4 --rounds 5 --lora-r 16 --lr 1e-3"])
    add_stage_command(group, "pretrain", FederatedPretrainConfig, run="genforge.federated.run:federated_pretrain",
                      help="Federated causal/masked LM training on packed token files (one folder per silo, or "
                           "a split of one).",
                      examples=["genforge federated pretrain --data work/data --preset tiny --out runs/fed-lm "
                                "--clients 4 --rounds 10 --local-steps 50"])
