"""CLI registration: `genforge finetune classify|sft|dpo|average`, `genforge predict`, `genforge chat`, `genforge tune`."""

import typer

from genforge.finetune.config import (
    AverageConfig,
    ChatConfig,
    ClassifyConfig,
    DpoConfig,
    PredictConfig,
    SftConfig,
    TuneConfig,
)


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    group = typer.Typer(help="Adapt a pretrained model to labelled data: classification, dialogue SFT or DPO, "
                             "full or LoRA.", no_args_is_help=True)
    app.add_typer(group, name="finetune")
    add_stage_command(
        group, "classify", ClassifyConfig, run="genforge.finetune.classify:classify",
        help="Fine-tune a text classifier (single- or multi-label) on an encoder or a decoder.",
        examples=["genforge finetune classify --model MINILM_DIR --data train.csv --out runs/cls --epochs 3",
                  "genforge finetune classify --model runs/lm --data tickets.jsonl --label-field tags "
                  "--multi-label --head lstm --out runs/tags",
                  "genforge finetune classify --model MINILM_DIR --data train.csv --out runs/cls-lora "
                  "--lora-r 8 --lr 5e-4 --epochs 3"])
    add_stage_command(
        group, "sft", SftConfig, run="genforge.finetune.sft:sft",
        help="Supervised fine-tuning of a causal LM on chat dialogues (OpenAI messages or ShareGPT JSONL); "
             "loss on assistant tokens only.",
        examples=["genforge finetune sft --model runs/lm --data dialogues.jsonl --out runs/chat --epochs 2",
                  "genforge finetune sft --model runs/lm --data dialogues.jsonl --out runs/chat-lora "
                  "--lora-r 16 --lr 1e-3 --pack"])
    add_stage_command(
        group, "dpo", DpoConfig, run="genforge.finetune.dpo:dpo",
        help="Direct Preference Optimization of a chat model on preference pairs (prompt, chosen, rejected), "
             "e.g. users' ratings and corrections from `genforge feedback export`.",
        examples=["genforge finetune dpo --model runs/chat --data runs/feedback/preference.jsonl --out runs/chat-dpo "
                  "--epochs 1",
                  "genforge finetune dpo --model runs/chat --data pairs.jsonl --out runs/chat-dpo --lora-r 16 "
                  "--lr 5e-5 --beta 0.1"])
    add_stage_command(
        group, "average", AverageConfig, run="genforge.finetune.average:average",
        help="Average the weights of fine-tuned models of one architecture (WiSE-FT, model soups): e.g. a "
             "normal and an adversarial classifier, for most of the robustness at the normal one's accuracy.",
        examples=["genforge finetune average --model runs/cls --model runs/cls-adv --weight 0.5 --weight 0.5 "
                  "--out runs/cls-wise"])
    add_stage_command(
        app, "predict", PredictConfig, run="genforge.finetune.predict:predict",
        help="Label texts with a fine-tuned classifier: prints label + probabilities, or writes JSONL.",
        examples=["genforge predict --model runs/cls --text 'Shares jumped 5% after earnings'",
                  "genforge predict --model runs/cls --data news.csv --text-field text --out preds.jsonl"])
    add_stage_command(
        app, "chat", ChatConfig, run="genforge.finetune.chat:chat",
        help="Chat with a causal LM in the terminal (multi-turn, streaming). /reset starts over, /exit leaves.",
        examples=["genforge chat --model runs/chat --system 'You are a helpful support agent.'"])
    add_stage_command(
        app, "tune", TuneConfig, run="genforge.finetune.tune:tune",
        help="Hyper-parameter search with Optuna over `finetune classify|sft|dpo` (search space in YAML; SQLite "
             "study, resumable; pruning on validation loss; best.yaml + trials.png).",
        examples=["genforge tune search.yaml --trials 20 --out runs/tune",
                  "genforge finetune classify --config runs/tune/best.yaml --out runs/best"])
