"""CLI registration of `genforge generate` (flags generated from GenerateConfig)."""

import typer

from genforge.generate.config import GenerateConfig


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    add_stage_command(
        app, "generate", GenerateConfig, run="genforge.generate.api:generate_from_config",
        help="Generate text with a local causal LM: greedy or sampled, stop strings, streaming, batched prompts.",
        examples=["genforge generate --model runs/quickstart/model --prompt 'Once upon a time'",
                  "genforge generate --model RUN --prompts prompts.jsonl --out completions.jsonl "
                  "--temperature 0.7 --top-p 0.9 --seed 1",
                  "genforge generate --model RUN --chat --prompt 'How do I reset my card PIN?' --stop '###'"])
