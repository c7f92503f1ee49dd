"""The step-level interface (prefill / decode_step / finished flags) on both backends."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from genforge.errors import ConfigError
from genforge.generate.config import SamplingParams
from genforge.generate.decoder import load_decoder

GREEDY = SamplingParams(temperature=0)


def run(decoder, prompts, budgets, stop_ids=()):
    state = decoder.prefill(prompts, GREEDY, budgets, stop_ids)
    steps = []
    while not state.done:
        steps.append(decoder.decode_step(state))
    return state, torch.stack(steps, 1)


def test_rows_finish_on_their_own_budget_and_stop_token(llama_dir):
    decoder = load_decoder(llama_dir)
    assert decoder.backend == "fast"
    prompts = [[10, 11, 12, 13], [20, 21]]
    state, _ = run(decoder, prompts, 8)
    free = state.tokens
    stop = free[0][3]
    state, steps = run(decoder, prompts, [8, 3], stop_ids=(stop,))
    first = free[0].index(stop)
    assert state.tokens[0] == free[0][:first] and state.finish_reason[0] == "eos"
    assert state.tokens[1] == free[1][:3] and state.finish_reason[1] == "length"
    # a finished row reports -1 from then on; the stop token itself is reported once
    assert steps[0, first].item() == stop and (steps[0, first + 1:] == -1).all()


def test_finishing_a_row_early_leaves_the_others_unchanged(llama_dir):
    decoder = load_decoder(llama_dir)
    prompts = [[10, 11, 12], [30, 31, 32, 33, 34]]
    free, _ = run(decoder, prompts, 6)
    state = decoder.prefill(prompts, GREEDY, 6, ())
    decoder.decode_step(state)
    state.finish(0, "stop")
    while not state.done:
        decoder.decode_step(state)
    assert state.tokens[0] == free.tokens[0][:1] and state.finish_reason[0] == "stop"
    assert state.tokens[1] == free.tokens[1]
    with pytest.raises(ConfigError):
        decoder.decode_step(state)


def test_budget_is_capped_by_the_model_context(llama_dir):
    decoder = load_decoder(llama_dir)
    assert decoder.context == 256
    state, _ = run(decoder, [[5] * 250], 100)
    assert len(state.tokens[0]) == 6 and state.finish_reason == ["length"]
    with pytest.raises(ConfigError, match="context of 256"):
        decoder.prefill([[5] * 256], GREEDY, 1)


def test_fast_and_hf_backends_agree(llama_dir):
    prompts = [[10, 11, 12, 13, 14, 15], [20, 21], [7]]
    fast, _ = run(load_decoder(llama_dir), prompts, 12)
    hf, _ = run(load_decoder(llama_dir, backend="hf"), prompts, 12)
    assert fast.tokens == hf.tokens


def test_hf_backend_matches_model_generate_for_gpt2(gpt2_dir):
    decoder = load_decoder(gpt2_dir)
    assert decoder.backend == "hf"
    prompts = [[10, 11, 12, 13, 14], [20, 21], [30, 31, 32]]
    state, _ = run(decoder, prompts, 10)
    model = AutoModelForCausalLM.from_pretrained(gpt2_dir).eval()
    width = 5
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[:, width:]
    assert state.tokens == ref.tolist()


def test_fast_backend_refuses_other_architectures(gpt2_dir):
    with pytest.raises(ConfigError, match="GPT2LMHeadModel is not LlamaForCausalLM"):
        load_decoder(gpt2_dir, backend="fast")


def test_a_model_object_off_the_cpu_is_refused_in_one_line(llama_dir, tokenizer):
    """Generation keeps its caches and masks on the CPU; meta stands in for a GPU."""
    model = AutoModelForCausalLM.from_pretrained(llama_dir).to("meta")
    with pytest.raises(ConfigError, match=r"the model is on meta, and genforge generates on the CPU: pass model.cpu\(\)"):
        load_decoder(model, tokenizer)
