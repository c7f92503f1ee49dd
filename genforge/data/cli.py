"""CLI registration of the data stage: `genforge data ...` commands, generated from the config dataclasses."""

import typer

from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command  # here, not at the top: genforge.cli imports this module

    data = typer.Typer(help="Prepare raw text: clean, scrub PII, deduplicate, split; pack token files.",
                       no_args_is_help=True)
    app.add_typer(data, name="data")
    add_stage_command(
        data, "prepare", PrepareConfig, run="genforge.data.prepare:prepare",
        help="Read raw files (txt, md, jsonl, json, csv, tsv, parquet, html), clean them, scrub PII, drop exact and "
             "near duplicates, and write train.jsonl / val.jsonl / stats.json to --out.",
        examples=["genforge data prepare docs/ exports/tickets.csv --text-field body --out data/",
                  "genforge data prepare corpus.jsonl --no-pii --near-dup-threshold 0.9 --workers 8 --out data/"],
    )
    add_stage_command(
        data, "pack", PackConfig, run="genforge.data.pack:pack",
        help="Encode train.jsonl / val.jsonl of a prepared data folder into flat token files train.bin / val.bin "
             "(each document followed by EOS), copy the tokenizer beside them and write pack.json.",
        examples=["genforge data pack --data data/ --tokenizer tokenizer/",
                  "genforge data pack --data data/ --tokenizer tokenizer/ --workers 8"],
    )

    tokenizer = typer.Typer(help="Train a byte-level BPE tokenizer (Hugging Face format) on prepared data.",
                            no_args_is_help=True)
    app.add_typer(tokenizer, name="tokenizer")
    add_stage_command(
        tokenizer, "train", TokenizerConfig, run="genforge.data.tokenizer:train_tokenizer",
        help="Train a byte-level BPE tokenizer on train.jsonl of a prepared data folder: exact round trip for any "
             "text, special tokens <|pad|> <|bos|> <|eos|> <|mask|> <|im_start|> <|im_end|> (ids 0-5), ChatML "
             "chat template. Writes a Hugging Face tokenizer folder to --out.",
        examples=["genforge tokenizer train --data data/ --vocab-size 8192 --out tokenizer/",
                  "genforge tokenizer train --data data/ --vocab-size 32000 --max-docs 200000 --out tokenizer/"],
    )
