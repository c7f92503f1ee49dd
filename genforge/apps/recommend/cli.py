"""`genforge app recommend build|recommend|eval|serve` (flags generated from the config dataclasses)."""

from __future__ import annotations

import typer

from genforge.apps.recommend.config import BuildConfig, EvalConfig, RecommendConfig, RecServeConfig
from genforge.cli import add_stage_command

PKG = "genforge.apps.recommend"


def register(group: typer.Typer) -> None:
    rec = typer.Typer(help="Text-based personalised recommender: item text + behaviour, offline eval, serving.",
                      no_args_is_help=True)
    group.add_typer(rec, name="recommend")
    data = "../shared/data/anime_recommendations"
    add_stage_command(rec, "build", BuildConfig, run=f"{PKG}.build:build",
                      help="Embed items, index them, fine-tune the interest scorer and train the rankers.",
                      examples=[f"genforge app recommend build --items {data}/anime_info.dat --item-id-field "
                                "anime_ids --text-fields name --text-fields genre --text-fields type --genre-field "
                                f"genre --interactions {data}/anime_ratings.dat --user-field User_ID --item-field "
                                "Anime_ID --rating-field Feedback --out runs/anime-rec"])
    add_stage_command(rec, "recommend", RecommendConfig, run=f"{PKG}.query:recommend",
                      help="Top-k items with a short explanation each, for a user, liked items or a text.",
                      examples=["genforge app recommend recommend --model runs/anime-rec --user 17 --k 10",
                                'genforge app recommend recommend --model runs/anime-rec --like "space opera '
                                'with politics"'])
    add_stage_command(rec, "eval", EvalConfig, run=f"{PKG}.evaluate:evaluate",
                      help="Recall/NDCG/MRR@k, coverage, novelty, cold-start recall and latency vs baselines.",
                      examples=["genforge app recommend eval --model runs/anime-rec --out runs/anime-rec-eval"])
    add_stage_command(rec, "serve", RecServeConfig, run=f"{PKG}.serve:serve",
                      help="POST /v1/recommend on genforge's server (keys, stored responses, feedback, A/B).",
                      examples=["genforge app recommend serve --model runs/anime-rec --port 8000"])
