"""CLI registration: `genforge robustness eval` (the attack suite and its report)."""

import typer

from genforge.adversarial.config import RobustnessConfig


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    group = typer.Typer(help="Measure how well a classifier holds under adversarial text attacks "
                             "(train robust models with `finetune classify --adversarial ... --augment-attack ...`).",
                        no_args_is_help=True)
    app.add_typer(group, name="robustness")
    add_stage_command(
        group, "eval", RobustnessConfig, run="genforge.adversarial.robustness:robustness_eval",
        help="Attack a classifier with black-box text attacks (character typos, look-alike and invisible "
             "characters, embedding-neighbour synonyms, same-pinyin Chinese characters) under query and "
             "perturbation budgets; writes report.json, a bar chart and the adversarial texts.",
        examples=["genforge robustness eval --model runs/cls --data test.csv --attack charswap --attack synonym "
                  "--out runs/cls-robustness",
                  "genforge robustness eval --model runs/zh --data reviews.csv --text-field review --attack pinyin "
                  "--attack invisible --max-queries 200 --out runs/zh-robustness"])
