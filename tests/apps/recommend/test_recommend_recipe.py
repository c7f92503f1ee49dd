import dataclasses
import importlib
from pathlib import Path

from genforge.config import from_dict, read_yaml
from genforge.recipes import STAGES, _parse_steps

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "recommend.yaml"


def test_recipe_steps_resolve_to_valid_configs_wired_build_eval_serve(shared_data):
    steps = _parse_steps(read_yaml(RECIPE), RECIPE)
    assert [stage for _, stage, _ in steps] == ["app.recommend.build", "app.recommend.eval", "app.recommend.serve"]
    artifacts = {}
    for name, stage_name, values in steps:
        stage = STAGES[stage_name]
        module, cls = stage.config.split(":")
        config_cls = getattr(importlib.import_module(module), cls)
        for key, kind in stage.consumes.items():
            values.setdefault(key, str(artifacts[kind]))  # what `genforge run` wires in
        if stage.produces and "out" in {f.name for f in dataclasses.fields(config_cls)}:
            values.setdefault("out", f"runs/recommend/{name}")
        cfg = from_dict(config_cls, values)
        if stage.produces:
            artifacts[stage.produces] = cfg.out
        if stage_name == "app.recommend.build":
            assert cfg.holdout and all((RECIPE.parents[1] / p).is_file() for p in [cfg.items, *cfg.interactions])
    assert artifacts["recommender"] == Path("runs/recommend/recommender")
