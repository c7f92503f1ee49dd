"""CLI registration: `genforge serve`, `genforge keys create|list|revoke`, `genforge ab report|promote` and
`genforge feedback export` (flags from the config dataclasses)."""

import typer

from genforge.serve.config import (
    AbPromoteConfig,
    AbReportConfig,
    FeedbackExportConfig,
    KeyCreateConfig,
    KeyListConfig,
    KeyRevokeConfig,
    ServeConfig,
)


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    add_stage_command(
        app, "serve", ServeConfig, run="genforge.serve.server:serve",
        help="Serve models over an OpenAI-compatible HTTP API (completions, chat, embeddings, classify) with "
             "continuous batching, streaming, API keys, limits and Prometheus metrics; A/B tests of weighted "
             "variants, stored responses and feedback, moderation, and a web chat at http://HOST:PORT/.",
        examples=["genforge serve --model runs/quickstart/chat",
                  "genforge serve --model runs/chat --variant lora=runs/chat-lora:0.2 --port 8080",
                  "genforge serve --model runs/chat --blocklist terms.txt --policy completions=flag",
                  "GENFORGE_API_KEY=secret genforge serve --model runs/chat --host 0.0.0.0"])
    keys = typer.Typer(help="Managed API keys of `genforge serve` (stored hashed in the serving database).",
                       no_args_is_help=True)
    app.add_typer(keys, name="keys")
    add_stage_command(keys, "create", KeyCreateConfig, run="genforge.serve.server:keys_create",
                      help="Create a key; it is printed once on stdout and only its hash is stored.",
                      examples=["genforge keys create alice --rate-limit 60"])
    add_stage_command(keys, "list", KeyListConfig, run="genforge.serve.server:keys_list",
                      help="List keys (name, prefix, rate limit, created, revoked).",
                      examples=["genforge keys list"])
    add_stage_command(keys, "revoke", KeyRevokeConfig, run="genforge.serve.server:keys_revoke",
                      help="Revoke a key by name or id; servers refuse it from the next request on.",
                      examples=["genforge keys revoke alice"])

    ab = typer.Typer(help="A/B tests of `genforge serve` (a --model with weighted --variant folders).",
                     no_args_is_help=True)
    app.add_typer(ab, name="ab")
    add_stage_command(ab, "report", AbReportConfig, run="genforge.serve.abreport:run_report",
                      help="Per-variant feedback rate, positive rate and latency; z-test, probability to beat the "
                           "control, sample-ratio-mismatch check and a recommendation (keep, promote, stop).",
                      examples=["genforge ab report", "genforge ab report --model chat --out runs/ab-report"])
    add_stage_command(ab, "promote", AbPromoteConfig, run="genforge.serve.ab:run_promote",
                      help="Shift traffic to a variant; every replica on the database follows from its next request.",
                      examples=["genforge ab promote lora", "genforge ab promote lora --share 0.5"])
    feedback = typer.Typer(help="User feedback collected by `genforge serve`.", no_args_is_help=True)
    app.add_typer(feedback, name="feedback")
    add_stage_command(feedback, "export", FeedbackExportConfig, run="genforge.serve.feedback:export",
                      help="Corrected answers as SFT dialogues and rated answers as preference pairs, with a "
                           "manifest (lineage for `genforge finetune sft --data DIR/sft.jsonl`).",
                      examples=["genforge feedback export --out runs/feedback"])
