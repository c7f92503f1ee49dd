"""CLI registration of the training stage: `genforge pretrain` and `genforge eval` (top-level commands)."""

import typer

from genforge.cli import add_stage_command
from genforge.train.config import EvalConfig, PretrainConfig


def register(app: typer.Typer) -> None:
    add_stage_command(
        app, "pretrain", PretrainConfig, run="genforge.train.pretrain:pretrain",
        help="Pretrain a causal (Llama) or masked (BERT) language model on a packed data folder. "
             "Runs unchanged under `torchrun --nproc_per_node N` (DDP).",
        examples=["genforge pretrain --data work/data --objective clm --preset small --out runs/lm --max-minutes 10",
                  "genforge pretrain --data work/data --out runs/lm --resume --max-steps 4000",
                  "genforge pretrain --data work/data --model path/to/hf_model --out runs/lm2 --lr 3e-4",
                  "torchrun --nproc_per_node 2 -m genforge.cli pretrain --data work/data --out runs/lm --grad-accum 2"])
    add_stage_command(
        app, "eval", EvalConfig, run="genforge.train.evaluate:evaluate",
        help="Print {loss, perplexity, bits_per_byte} of a model on the validation split as JSON.",
        examples=["genforge eval --model runs/lm --data work/data"])
