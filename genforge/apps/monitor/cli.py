"""`genforge app monitor train|run|report`: the financial news sentiment monitor."""

import typer

from genforge.apps.monitor.config import (
    MonitorReplayConfig,
    MonitorReportConfig,
    MonitorRunConfig,
    MonitorTrainConfig,
)

PB = "../shared/data/financial_phrasebank/Sentences_50Agree.txt"


def register(group: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    monitor = typer.Typer(help="Financial news sentiment monitor: topic + sentiment of a stream, trends, surge "
                               "alerts, dashboard.", no_args_is_help=True)
    group.add_typer(monitor, name="monitor")
    add_stage_command(
        monitor, "train", MonitorTrainConfig, run="genforge.apps.monitor.train:train",
        help="Train the monitor's sentiment classifier (and topic classifier, or discover topics) with "
             "`finetune classify`.",
        examples=[f"genforge app monitor train --model MINILM_DIR --sentiment-data {PB} --sentiment-data "
                  "'tweets.csv#0=negative,1=positive,2=neutral' --topics 8 --out runs/monitor-model"])
    add_stage_command(
        monitor, "run", MonitorRunConfig, run="genforge.apps.monitor.run:run",
        help="Ingest streams (JSONL tail, folder, HTTP), classify in batches, store, alert; serve the dashboard "
             "at /monitor.",
        examples=["genforge app monitor run --model runs/monitor-model --source jsonl:news.jsonl "
                  "--source folder:inbox/ --source http --rules alerts.yaml --port 8000",
                  "genforge app monitor run --model runs/monitor-model --source jsonl:replay.jsonl --once"])
    add_stage_command(
        monitor, "report", MonitorReportConfig, run="genforge.apps.monitor.report:report",
        help="Static HTML report (PNG charts per topic, alerts with example items) from the monitor database.",
        examples=["genforge app monitor report --since 7d --out report.html"])
    add_stage_command(
        monitor, "replay", MonitorReplayConfig, run="genforge.apps.monitor.replay:replay",
        help="Make a timed JSONL stream from labelled texts with injected negative surges (demos, rule tuning).",
        examples=["genforge app monitor replay --data 'tweets.csv#0=negative,1=positive,2=neutral' --days 7 "
                  "--out runs/replay", "genforge app monitor run --model runs/monitor-model --source "
                  "jsonl:runs/replay/stream.jsonl --once"])
