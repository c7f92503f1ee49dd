"""CLI registration: `genforge compress`."""

import typer

from genforge.compress.config import CompressConfig


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    add_stage_command(
        app, "compress", CompressConfig, run="genforge.compress.run:compress",
        help="Make a model smaller and faster (int8/int4 quantisation, ONNX Runtime int8, pruning, distillation) "
             "and report what it cost: report.json, report.png and a table of parameters, size, latency, "
             "throughput and quality for the original and the compressed model, measured in the same run.",
        examples=["genforge compress --model runs/lm --method int8 --out runs/lm-int8 --eval-data work/data",
                  "genforge compress --model runs/lm --method int4 --group-size 64 --out runs/lm-int4 "
                  "--eval-data work/data",
                  "genforge compress --model runs/cls --method onnx-int8 --out runs/cls-onnx --eval-data test.csv",
                  "genforge compress --model runs/lm --method prune-structured --ffn-fraction 0.3 "
                  "--importance wanda --data work/data --max-steps 300 --out runs/lm-pruned --eval-data work/data",
                  "genforge compress --model runs/cls --method distill --data train.csv --student-layers 3 "
                  "--trim-vocab --epochs 3 --out runs/cls-student --eval-data test.csv"])
