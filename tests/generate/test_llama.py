"""Parity of the fast Llama forward with the Hugging Face implementation (logits and greedy tokens)."""

import pytest
import torch
from transformers import LlamaForCausalLM

from genforge.generate import llama
from genforge.generate.config import SamplingParams
from genforge.generate.decoder import Decoder
from genforge.generate.llama import LlamaRunner

CONFIGS = {
    "gqa": {},
    "mha_tied_bias": {"num_key_value_heads": 4, "tie_word_embeddings": True, "attention_bias": True,
                      "mlp_bias": True},
    "llama3_rope": {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 16}},
    "linear_rope_head_dim": {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0},
                             "head_dim": 32},
}


def left_padded(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, batch))
    ids = torch.zeros(len(batch), width, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, p in enumerate(batch):
        ids[row, width - len(p):], mask[row, width - len(p):] = torch.tensor(p), 1
    return ids, mask


def prompts(n: int = 3, vocab: int = 300) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(6, vocab, (length,), generator=g).tolist() for length in (9, 4, 1, 7)[:n]]


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_hf_with_left_padding(name, llama_config):
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(**CONFIGS[name])).eval()
    weights = llama.from_hf(model, torch.float32)
    ids, mask = left_padded(prompts())
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    start = (1 - mask).sum(1)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    cache = llama.new_cache(weights, 3, ids.shape[1] + 3)
    out = llama.forward(weights, cache, ids, positions, 0, llama.attention_mask(start, 0, ids.shape[1]),
                        all_logits=True)
    real = mask.bool()
    torch.testing.assert_close(out[real], ref[real], rtol=1e-4, atol=1e-4)

    # decode steps: one token per row against HF's full forward over the grown sequence
    for step in range(3):
        nxt = torch.randint(6, 300, (3, 1))
        col = ids.shape[1]
        got = llama.forward(weights, cache, nxt, (col - start)[:, None], col, llama.attention_mask(start, col, 1))
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
        torch.testing.assert_close(got, ref[:, -1], rtol=1e-4, atol=1e-4, msg=f"decode step {step}")


@pytest.mark.parametrize("name", ["gqa", "mha_tied_bias"])
def test_greedy_tokens_match_model_generate(name, tokenizer, llama_config):
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(**CONFIGS[name])).eval()
    batch = prompts(4)
    ids, mask = left_padded(batch)
    n = 24
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[:, ids.shape[1]:]
    decoder = Decoder(LlamaRunner(llama.from_hf(model, torch.float32), model.config.vocab_size), tokenizer,
                      eos_ids=(), pad_id=0, context=None)
    state = decoder.prefill(batch, SamplingParams(temperature=0), n)
    while not state.done:
        decoder.decode_step(state)
    assert torch.equal(torch.tensor(state.tokens), ref)
    assert state.finish_reason == ["length"] * 4


def test_dynamic_rope_is_left_to_the_hf_backend(llama_config):
    model = LlamaForCausalLM(llama_config(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4,
                                                           "factor": 2.0}))
    assert "dynamic" in llama.unsupported_reason(model)
    assert llama.unsupported_reason(LlamaForCausalLM(llama_config())) is None


def test_prompt_in_chunks_equals_one_prefill(llama_config):
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config()).eval()
    weights = llama.from_hf(model, torch.float32)
    ids = torch.randint(6, 300, (2, 10))
    positions = torch.arange(10).expand(2, 10)
    whole = llama.forward(weights, llama.new_cache(weights, 2, 10), ids, positions, 0, None, all_logits=True)
    cache = llama.new_cache(weights, 2, 10)
    llama.forward(weights, cache, ids[:, :4], positions[:, :4], 0, None)
    rest = llama.forward(weights, cache, ids[:, 4:], positions[:, 4:], 4, None, all_logits=True)
    torch.testing.assert_close(rest, whole[:, 4:], rtol=1e-5, atol=1e-5)
