"""`genforge finetune dpo`: the DPO loss and its gradient, pair reading and encoding, and a tiny run that
learns to prefer the chosen answers (full and LoRA), fed by `genforge feedback export`'s format."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from genforge.artifacts import read_manifest
from genforge.cli import app
from genforge.errors import ConfigError, DataError
from genforge.finetune.config import DpoConfig
from genforge.finetune.dpo import DpoObjective, dpo, encode_pairs, make_collate, read_pairs, sequence_logps
from genforge.finetune.model import Wrapped
from genforge.finetune.sft import load_causal_lm
from genforge.train.objectives import IGNORE


def _pairs(n: int) -> list[dict]:
    """Prompts asking about item i; the chosen answer names it politely, the rejected one is curt."""
    return [{"prompt": [{"role": "user", "content": f"where is order {i}?"}], "chosen": f"order {i} ships today.",
             "rejected": "no idea"} for i in range(n)]


def test_the_loss_is_log_2_at_the_reference_and_its_gradient_prefers_the_chosen(llama_dir, tokenizer, jsonl):
    lm = Wrapped(load_causal_lm(llama_dir)).eval()
    examples = encode_pairs(tokenizer, read_pairs(jsonl("p.jsonl", _pairs(3))), 64)
    with torch.no_grad():
        batch = make_collate(examples, torch.zeros(3, 2), tokenizer.pad_token_id)([0, 1, 2])
        ref = sequence_logps(lm, batch["input_ids"], batch["attention_mask"], batch["labels"])
    batch["ref_logps"] = ref  # the reference is the model itself: every margin is 0
    objective = DpoObjective(beta=0.5)
    loss, metrics = objective.loss(lm, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5) and metrics["tokens"].item() == 3
    with torch.no_grad():  # RPO adds the chosen answers' NLL per token
        rpo, _ = DpoObjective(beta=0.5, sft_weight=2.0).loss(lm, batch)
    chosen_tokens = (batch["labels"][:3] != IGNORE).sum()
    assert rpo.item() == pytest.approx(math.log(2) - 2.0 * (ref[:3].sum() / chosen_tokens).item(), rel=1e-4)
    loss.backward()
    step = [p.grad for p in lm.parameters()]
    with torch.no_grad():  # one small descent step raises chosen over rejected
        for p, g in zip(lm.parameters(), step, strict=True):
            p -= 1e-2 * g
        assert (objective.margins(lm, batch) > 0).all()


def test_pairs_take_message_or_string_prompts_and_mask_the_prompt(tokenizer, jsonl):
    path = jsonl("p.jsonl", [{"prompt": "hi", "chosen": "hello!", "rejected": "go away"},
                             {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"}],
                              "chosen": "hello!", "rejected": "no"}])
    pairs = read_pairs(path)
    assert pairs[0][0] == [{"role": "user", "content": "hi"}] and pairs[1][0][0]["role"] == "system"
    (chosen, rejected), _ = encode_pairs(tokenizer, pairs, 64)
    learned = tokenizer.decode([i for i, lab in zip(*chosen, strict=True) if lab != IGNORE])
    assert learned == "hello!<|im_end|>\n"
    prompt_len = next(k for k, lab in enumerate(chosen[1]) if lab != IGNORE)
    assert chosen[0][:prompt_len] == rejected[0][:prompt_len] and rejected[1][prompt_len - 1] == IGNORE  # one prompt
    for bad, message in [({"prompt": "x", "chosen": "a"}, "missing rejected"),
                         ({"prompt": "x", "chosen": "a", "rejected": "a"}, "two different non-empty texts"),
                         ({"prompt": 5, "chosen": "a", "rejected": "b"}, "list of chat messages or a string"),
                         ({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"},
                          "unknown role")]:
        with pytest.raises(DataError, match=message):
            read_pairs(jsonl("bad.jsonl", [bad]))


CHAT = [{"role": "system", "content": "Be kind."},
        {"role": "user", "content": "first question about the weather today"},
        {"role": "assistant", "content": "it is sunny and warm"}, {"role": "user", "content": "and tomorrow?"}]


def _scored(encoded: tuple[list[int], list[int]]) -> tuple[list[int], list[int]]:
    """(prompt ids, scored ids) of one encoded answer; the scored positions must be one run at the end."""
    ids, labels = encoded
    first = next(k for k, lab in enumerate(labels) if lab != IGNORE)
    assert all(lab == IGNORE for lab in labels[:first]) and labels[first:] == ids[first:]
    return ids[:first], ids[first:]


def test_only_the_final_answer_of_a_multi_turn_prompt_is_scored(tokenizer):
    """A served chat's earlier assistant turns are context, not what was rated; they were scored (and
    trained on by the RPO term) as if they were part of both answers."""
    (chosen, rejected), = encode_pairs(tokenizer, [(CHAT, "rain", "snow")], 200)
    for encoded, answer in [(chosen, "rain"), (rejected, "snow")]:
        _, scored = _scored(encoded)
        assert tokenizer.decode(scored) == f"{answer}<|im_end|>\n"


def test_truncation_cuts_one_prompt_for_both_answers(tokenizer):
    """Cut apart, a long chosen answer lost the first exchange and a short rejected one kept it: the margin
    compared two prompts (and could flip sign)."""
    long, short = "tomorrow it will rain heavily in the morning and clear up later", "rain"
    (whole, _), = encode_pairs(tokenizer, [(CHAT, long, short)], 500)
    (chosen, rejected), = encode_pairs(tokenizer, [(CHAT, long, short)], len(whole[0]) - 2)  # the long one is over
    (prompt, scored), (other_prompt, _) = _scored(chosen), _scored(rejected)
    assert prompt == other_prompt and tokenizer.decode(scored) == f"{long}<|im_end|>\n"
    assert "Be kind." in tokenizer.decode(prompt) and "sunny" not in tokenizer.decode(prompt)
    (chosen, rejected), = encode_pairs(tokenizer, [(CHAT, long, short)], len(prompt) + 3)  # the answers' ends go
    (cut_prompt, scored), (other_prompt, _) = _scored(chosen), _scored(rejected)
    assert cut_prompt == other_prompt == prompt and len(chosen[0]) == len(prompt) + 4
    assert tokenizer.decode(scored) == tokenizer.decode(_scored(whole)[1][:4])


def test_at_the_reference_rpo_adds_the_nll_of_the_final_answers_only(llama_dir, tokenizer):
    lm = Wrapped(load_causal_lm(llama_dir)).eval()
    answers = ["rain", "it will rain"]
    examples = encode_pairs(tokenizer, [(CHAT, answers[0], "snow"), (CHAT, answers[1], "no idea")], 200)
    with torch.no_grad():
        batch = make_collate(examples, torch.zeros(2, 2), tokenizer.pad_token_id)([0, 1])
        batch["ref_logps"] = sequence_logps(lm, batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss, _ = DpoObjective(beta=0.5, sft_weight=2.0).loss(lm, batch)
        nll, count = 0.0, 0  # the chosen answers' tokens, found from their text at the end of each sequence
        for (ids, _), answer in zip((e[0] for e in examples), answers, strict=True):
            n = len(tokenizer(f"{answer}<|im_end|>\n", add_special_tokens=False)["input_ids"])
            logp = lm(input_ids=torch.tensor([ids]), use_cache=False).logits.float().log_softmax(-1)[0]
            nll -= sum(logp[k - 1, ids[k]].item() for k in range(len(ids) - n, len(ids)))
            count += n
    assert loss.item() == pytest.approx(math.log(2) + 2.0 * nll / count, rel=1e-4)


def test_dpo_learns_to_prefer_the_chosen_answers(tmp_path, llama_dir, jsonl):
    data = jsonl("preference.jsonl", _pairs(48))
    common = dict(model=llama_dir, data=data, max_steps=12, batch_size=4, seq_len=48, lr=2e-3, beta=0.5,
                  warmup_steps=1, eval_every=6, log_every=2, bf16=False)
    full = dpo(DpoConfig(out=tmp_path / "full", **common))
    metrics = read_manifest(full, "finetune")["metrics"]
    assert metrics["val_loss_before"] == pytest.approx(math.log(2), abs=1e-4)
    assert metrics["val_loss"] < 0.6 and metrics["val_reward_accuracy"] > 0.8
    assert (full / "model.safetensors").is_file() and (full / "README.md").is_file()
    lora = dpo(DpoConfig(out=tmp_path / "lora", lora_r=4, lora_alpha=8, **common))
    assert (lora / "adapter_model.safetensors").is_file()
    assert read_manifest(lora, "finetune")["metrics"]["val_loss"] < math.log(2)


def test_dpo_refuses_bad_settings_in_one_line(tmp_path, llama_dir, jsonl):
    data = jsonl("p.jsonl", _pairs(4))
    with pytest.raises(ConfigError, match="--beta must be"):
        DpoConfig(model=llama_dir, data=data, out=tmp_path / "x", beta=0).check()
    with pytest.raises(ConfigError, match="--sft-weight must be"):
        DpoConfig(model=llama_dir, data=data, out=tmp_path / "x", sft_weight=-1).check()
    with pytest.raises(ConfigError, match="not to DPO"):
        DpoConfig(model=llama_dir, data=data, out=tmp_path / "x", adversarial="fgm").check()
    result = CliRunner().invoke(app, ["finetune", "dpo", "--model", str(llama_dir), "--data", str(tmp_path / "no"),
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt": "\\ud800", "chosen": "a", "rejected": "b"}', r"field 'prompt' is not UTF-8 text \(lone surrogate"),
    ('{"prompt": "q", "chosen": "a\\udc80", "rejected": "b"}', r"field 'chosen' is not UTF-8 text \(byte 0x80\)"),
    ('{"prompt": [], "chosen": "a", "rejected": "b"}', "must be a non-empty list of chat messages"),
    ('{"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}',
     "turn 0 is an assistant turn"),
])
def test_unusable_prompts_and_answers_name_their_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.jsonl:2: .*" + message):
        read_pairs(path)


def test_bad_numbers_are_refused_before_an_earlier_run_is_touched(tmp_path, llama_dir, jsonl):
    """NaN passed `x < 0` checks (an all-NaN model, exit 0); --epochs/--max-minutes nan crashed after the
    output folder was prepared, which had removed a finished run's manifest and checkpoints."""
    from genforge.artifacts import write_manifest

    data, run = jsonl("p.jsonl", _pairs(4)), tmp_path / "run"
    write_manifest(run, "finetune", None)
    (run / "checkpoints" / "latest").mkdir(parents=True)
    for flag, value in [("--grad-clip", "nan"), ("--weight-decay", "nan"), ("--min-lr", "nan"), ("--epochs", "nan"),
                        ("--epochs", "inf"), ("--max-minutes", "nan"), ("--max-minutes", "inf"), ("--beta", "inf")]:
        result = CliRunner().invoke(app, ["finetune", "dpo", "--model", str(llama_dir), "--data", str(data),
                                          "--out", str(run), flag, value])
        assert result.exit_code == 2, result.output
        assert result.output == f"error: {flag} must be a finite number, got {value}\n" or flag == "--beta"
    assert read_manifest(run, "finetune") and (run / "checkpoints" / "latest").is_dir()


def test_a_huge_beta_diverges_into_an_error_not_a_nan_model(tmp_path, llama_dir, jsonl):
    cfg = DpoConfig(model=llama_dir, data=jsonl("p.jsonl", _pairs(24)), out=tmp_path / "run", max_steps=2,
                    batch_size=4, seq_len=48, beta=1e300, warmup_steps=0, eval_every=0, log_every=1, bf16=False)
    with pytest.raises(ConfigError, match=r"^training diverged at step 1 .*; lower --lr"):
        dpo(cfg)
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_batch_bigger_than_the_data_is_cut_to_it(tmp_path, llama_dir, jsonl, capsys):
    """--batch-size 100000 on 24 pairs grew to ~20 GB: each batch repeated the pairs to the flag's size."""
    out = dpo(DpoConfig(model=llama_dir, data=jsonl("p.jsonl", _pairs(24)), out=tmp_path / "run", max_steps=1,
                        batch_size=1000, seq_len=48, warmup_steps=0, eval_every=0, bf16=False))
    manifest = read_manifest(out, "finetune")
    n = manifest["metrics"]["train_pairs"]
    assert manifest["config"]["batch_size"] == n < 24
    assert f"note: --batch-size 1000 is more than the {n} training examples; using {n}" in capsys.readouterr().err


def _dropout_model(kind: str, vocab: int):
    """A tiny random decoder with heavy dropout: Llama's attention dropout is a float its attention layers
    read at forward time; GPT-2's are nn.Dropout modules (embeddings, attention, residuals)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            num_key_value_heads=2, intermediate_size=128, max_position_embeddings=128,
                                            attention_dropout=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=128, embd_pdrop=0.5,
                                      attn_pdrop=0.5, resid_pdrop=0.5, pad_token_id=0, bos_token_id=1, eos_token_id=2))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_dropout_is_off_so_the_first_training_loss_is_log_2(tmp_path, tokenizer, save_folder, jsonl, kind):
    """The reference's log-probabilities are taken in eval mode; a policy training with its dropout on scored
    the answers with noise the reference lacked, so at step 0 (policy = reference) the margins were not 0 and
    the loss not log 2. Dropout is off during DPO (as TRL's `disable_dropout`); the exported model keeps it."""
    base = save_folder(_dropout_model(kind, len(tokenizer)), tokenizer, tmp_path / kind)
    out = dpo(DpoConfig(model=base, data=jsonl("p.jsonl", _pairs(24)), out=tmp_path / "run", max_steps=1, batch_size=4,
                        seq_len=48, warmup_steps=0, eval_every=0, log_every=1, bf16=False))
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["kind"] == "train" and r["step"] == 1)  # the loss before the first update
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    key = "attention_dropout" if kind == "llama" else "attn_pdrop"
    assert json.loads((out / "config.json").read_text())[key] == 0.5


def test_dropout_flag_is_refused_for_dpo(tmp_path, llama_dir, jsonl):
    with pytest.raises(ConfigError, match=r"^--dropout does not apply to DPO"):
        DpoConfig(model=llama_dir, data=jsonl("p.jsonl", _pairs(4)), out=tmp_path / "x", dropout=0.1).check()


class TableLm(torch.nn.Module):
    """Logits straight from a table: runs on any device, meta included (HF models read masks back on meta)."""

    def __init__(self, vocab: int = 16):
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.table(input_ids))


def test_the_pair_count_is_made_where_the_margins_are():
    """Evaluation stacks the count with the loss: both must be on the device. Meta tensors stand in for a GPU's
    (CPU and meta tensors do not stack, as CPU and CUDA do not)."""
    meta = torch.device("meta")
    ids = torch.zeros(4, 5, dtype=torch.long, device=meta)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids,
             "ref_logps": torch.zeros(4, device=meta)}
    loss, metrics = DpoObjective(beta=0.1).loss(TableLm().to(meta), batch)
    assert metrics["tokens"].device == loss.device == meta
