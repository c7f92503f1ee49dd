import json

import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.config import load_config
from genforge.errors import ConfigError
from genforge.recipes import RunConfig, run_recipe

RECIPE = """
name: mini
steps:
  - stage: data.prepare
    inputs: [{corpus}]
  - stage: tokenizer.train
    vocab_size: 400
  - stage: data.pack
  - stage: pretrain
    preset: tiny
    seq_len: 32
    batch_size: 4
    max_steps: 6
    warmup_steps: 2
    eval_every: 0
    eval_batches: 2
    save_every: 3
  - stage: eval
    eval_batches: 2
    seq_len: 32
  - stage: generate
    prompt: "Hello"
    max_new_tokens: 4
    temperature: 0
  - stage: finetune.sft
    name: chat
    data: {dialogues}
    seq_len: 32
    batch_size: 4
    max_steps: 3
    warmup_steps: 1
    eval_every: 0
    eval_batches: 2
  - stage: generate
    name: replies
    prompt: "order 3?"
    chat: true
    max_new_tokens: 4
    temperature: 0
"""


@pytest.fixture
def recipe(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    paragraphs = [f"Paragraph {i} about shipping, returns and order {i * 7} for our customers." for i in range(60)]
    (corpus / "a.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    dialogues = tmp_path / "chats.jsonl"
    chats = [{"messages": [{"role": "user", "content": f"order {i}?"}, {"role": "assistant", "content": "shipped"}]}
             for i in range(30)]
    dialogues.write_text("".join(json.dumps(c) + "\n" for c in chats), encoding="utf-8")
    path = tmp_path / "mini.yaml"
    path.write_text(RECIPE.format(corpus=corpus, dialogues=dialogues), encoding="utf-8")
    return path


def test_recipe_chains_stages_with_lineage_and_skips_finished_steps(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    artifacts = run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": out}))
    assert artifacts == {"data": out / "data", "tokenizer": out / "tokenizer", "model": out / "chat"}
    chat_manifest = json.loads((out / "chat" / "manifest.json").read_text())
    assert chat_manifest["parent"]["stage"] == "pretrain"  # the SFT step was wired to the pretrained model
    model_manifest = json.loads((out / "model" / "manifest.json").read_text())
    assert model_manifest["parent"]["stage"] == "data.pack"
    assert model_manifest["parent"]["parent"]["stage"] == "data.prepare"
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "manifest.json").read_text())["artifacts"]["model"] == str(out / "chat")

    assert f"serve it: genforge serve --model {out / 'chat'}" in capsys.readouterr().out
    run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": out}))
    assert capsys.readouterr().out.count("already done") == 5  # data, tokenizer, pack, model, chat

    # A changed step redoes itself and every step that reads what it made, though their configs (which name
    # their inputs by path only) are unchanged.
    recipe.write_text(recipe.read_text().replace("vocab_size: 400", "vocab_size: 420"), encoding="utf-8")
    run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": out}))
    printed = capsys.readouterr().out
    assert printed.count("already done") == 1  # data; tokenizer, pack, model and chat are redone
    assert f"{out / 'tokenizer'} was redone after {out / 'data'} was made: redoing it" in printed
    vocab = len(json.loads((out / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"])
    assert json.loads((out / "chat" / "config.json").read_text())["vocab_size"] >= vocab  # the new tokenizer's


def test_bad_recipes_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, message in [("steps: []\n", "non-empty list `steps`"),
                          ("steps:\n  - stage: fly\n", "unknown stage 'fly'"),
                          ("steps:\n  - stage: eval\n    colour: red\n", "step 'eval': unknown config key 'colour'"),
                          ("stepz: []\n", "unknown recipe key 'stepz'")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            run_recipe(load_config(RunConfig, None, {"recipe": bad, "out": tmp_path / "r"}))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output


def test_names_must_be_plain_folder_names_and_only_must_name_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default run folder is runs/<recipe name>, relative to here
    bad = tmp_path / "bad.yaml"
    for text, out, message in [
        ("steps:\n  - stage: eval\n    name: ../escape\n", tmp_path / "r", "name '../escape' must be a plain folder"),
        ("steps:\n  - stage: eval\n    name: a/b\n", tmp_path / "r", "name 'a/b' must be a plain folder"),
        ("name: ../x\nsteps:\n  - stage: eval\n", None, "recipe .*bad.yaml: name '../x' must be a plain folder"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            run_recipe(load_config(RunConfig, None, {"recipe": bad, "out": out}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # refused before any folder was made
    bad.write_text("steps:\n  - stage: eval\n  - stage: generate\n    name: replies\n")
    with pytest.raises(ConfigError, match="--only nosuchstep: .* no step of that name \\(its steps: eval, replies\\)"):
        run_recipe(load_config(RunConfig, None, {"recipe": bad, "out": tmp_path / "r", "only": ["nosuchstep"]}))


def test_a_step_trained_by_epochs_counts_as_done_whatever_steps_it_derived(tmp_path):
    from genforge.artifacts import write_manifest
    from genforge.finetune.config import ClassifyConfig
    from genforge.recipes import finished_with_same_config

    asked = ClassifyConfig(model="m", data="d.csv", out=tmp_path, epochs=2, max_steps=300)
    write_manifest(tmp_path, "finetune", ClassifyConfig(model="m", data="d.csv", out=tmp_path, epochs=2,
                                                        max_steps=1234, resume=True), metrics={})
    assert finished_with_same_config(tmp_path, "manifest.json", asked)
    assert not finished_with_same_config(tmp_path, "manifest.json", ClassifyConfig(
        model="m", data="d.csv", out=tmp_path, epochs=3))


def test_a_step_stopped_by_ctrl_c_says_how_the_recipe_continues(recipe, tmp_path, monkeypatch):
    """The step's own advice ("--resume") is no flag of `genforge run`: rerunning the recipe continues it."""
    import genforge.data.prepare

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(genforge.data.prepare, "prepare", interrupted)
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "r")])
    assert result.exit_code == 130, result.output
    assert f"step 'data' stopped: `genforge run {recipe} --out {tmp_path / 'r'}` continues" in result.output
    assert "--resume" not in result.output


@pytest.mark.parametrize(("last_step", "message"), [
    ("    colour: red\n", "step 'replies': unknown config key 'colour'"),
    ("    top_p: 2\n", r"step 'replies': top_p must be in \(0, 1\]"),
])
def test_every_step_is_checked_before_the_first_runs(recipe, tmp_path, last_step, message):
    """A bad key or value in the last step failed only when that step was reached, after the earlier ones had
    prepared data and trained models."""
    recipe.write_text(recipe.read_text() + last_step, encoding="utf-8")  # into the last step, `replies`
    with pytest.raises(ConfigError, match=message):
        run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": tmp_path / "run"}))
    assert not (tmp_path / "run").exists()  # no step started


def test_a_step_key_without_the_key_it_needs_is_refused_and_defaults_pass(recipe, tmp_path):
    """Recipes get the flags' check (`check_needs`): `adv_epsilon` without `adversarial` is refused, in a later
    step before the first runs; a key written at its default is no choice."""
    text = recipe.read_text()
    recipe.write_text(text.replace("    name: chat\n", "    name: chat\n    adv_epsilon: 0.5\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match="^step 'chat': --adv-epsilon has no effect without --adversarial "):
        run_recipe(load_config(RunConfig, None, {"recipe": recipe, "out": tmp_path / "run"}))
    assert not (tmp_path / "run").exists()

    from genforge.config import read_yaml
    from genforge.recipes import _parse_steps, plan_steps

    recipe.write_text(text.replace("    name: chat\n", "    name: chat\n    adv_epsilon: 1.0\n"), encoding="utf-8")
    planned = plan_steps(_parse_steps(read_yaml(recipe), recipe), tmp_path / "run", only=[])
    chat = next(step for step in planned if step.name == "chat")
    assert chat.config.model == tmp_path / "run" / "model"  # wired to the folder the pretrain step will write


def test_a_pack_step_writes_into_its_own_data_folder(tmp_path):
    """A recipe whose `data.pack` step names its data folder itself (no `data.prepare` step before it) ended in
    `internal error KeyError: 'data'`: the folder it writes into was looked up among the earlier steps' only."""
    from genforge.config import read_yaml
    from genforge.recipes import _parse_steps, plan_steps

    recipe = tmp_path / "pack.yaml"
    recipe.write_text(f"steps:\n  - stage: data.pack\n    data: {tmp_path / 'data'}\n    tokenizer: {tmp_path / 'tok'}\n")
    (step,) = plan_steps(_parse_steps(read_yaml(recipe), recipe), tmp_path / "run", only=[])
    assert step.out == tmp_path / "data"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.strip().endswith(f"error: {tmp_path / 'data'} does not exist")
