"""`genforge app support build|calibrate|ask|serve|eval|tickets|from-bitext` (flags generated from config.py)."""

import typer

from genforge.apps.support.config import (
    AskConfig,
    BuildConfig,
    CalibrateConfig,
    FromBitextConfig,
    SupportEvalConfig,
    SupportServeConfig,
    TicketsConfig,
)


def register(group: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    sub = typer.Typer(help="Customer-service assistant: FAQ + documents + support history -> answers with "
                           "citations, hand-off tickets, 24/7 web chat.", no_args_is_help=True)
    group.add_typer(sub, name="support")
    add_stage_command(sub, "build", BuildConfig, run="genforge.apps.support.build:build",
                      help="Index the knowledge base (BM25 + dense, RRF), fine-tune the chat model on the history "
                           "and the intent classifier, calibrate the answer/hand-off thresholds.",
                      examples=["genforge app support build --kb faq.csv --kb docs/ --history chats.jsonl "
                                "--oos offtopic.txt --out support"])
    add_stage_command(sub, "calibrate", CalibrateConfig, run="genforge.apps.support.build:recalibrate",
                      help="Re-calibrate a built assistant's intent, hand-off and FAQ thresholds on new "
                           "validation questions (no retraining).",
                      examples=["genforge app support calibrate --assistant support --val val.csv"])
    add_stage_command(sub, "ask", AskConfig, run="genforge.apps.support.server:ask",
                      help="Ask the assistant in the terminal (several questions make one conversation).",
                      examples=['genforge app support ask --assistant support "How do I cancel my order?"'])
    add_stage_command(sub, "serve", SupportServeConfig, run="genforge.apps.support.server:serve",
                      help="Serve the assistant: POST /v1/support/chat, the OpenAI model name 'support', the web "
                           "chat widget at /support.",
                      examples=["genforge app support serve --assistant support --port 8000"])
    add_stage_command(sub, "eval", SupportEvalConfig, run="genforge.apps.support.evaluate:evaluate",
                      help="Retrieval Hit@1/5, MRR, nDCG@10, answer accuracy, hand-off P/R/F1 and latency on "
                           "labelled questions.",
                      examples=["genforge app support eval --assistant support --data test.csv --out support-eval"])
    add_stage_command(sub, "tickets", TicketsConfig, run="genforge.apps.support.server:tickets",
                      help="List (and close) the hand-off tickets in the serving database.",
                      examples=["genforge app support tickets", "genforge app support tickets --close 3"])
    add_stage_command(sub, "from-bitext", FromBitextConfig, run="genforge.apps.support.bitext:from_bitext",
                      help="Turn the shared Bitext + CLINC150 data into a FAQ, history and val/test questions.",
                      examples=["genforge app support from-bitext --data ../shared/data --out support-data"])
