"""Continuous batching is exact: a sequence decodes the same tokens alone and in a batch that others join
and leave at any step (row moves, cache shifts both ways, waiting for room), greedy or seeded sampling."""

from collections import deque

import pytest

from genforge.errors import ConfigError
from genforge.generate import SamplingParams, load_decoder
from genforge.serve.batch import Seq, SlotBatch, available_memory

GREEDY = SamplingParams(temperature=0)


def alone(decoder, seq: Seq) -> list[int]:
    """The reference: the generation decoder on this one prompt."""
    state = decoder.prefill([seq.prompt], seq.params, seq.max_tokens, stop_ids=tuple(seq.stop_ids))
    while not state.done:
        decoder.decode_step(state)
    return state.tokens[0]


def drive(batch: SlotBatch, arrivals: dict[int, list[Seq]]) -> list[int]:
    """Run the batch as the engine does; return how many sequences joined at each step."""
    waiting, joined, step = deque(), [], 0
    while arrivals or waiting or batch.live():
        waiting.extend(arrivals.pop(step, []))
        if waiting and batch.stageable(waiting[0]):
            batch.stage(waiting.popleft())
        new = [waiting.popleft() for _ in range(batch.admissible(waiting))]
        if batch.rows or new or batch.staged:
            batch.step(new)
        joined.append(len(new))
        step += 1
    return joined


def prompt(n: int, offset: int = 0) -> list[int]:
    return [(7 * i + offset) % 300 + 10 for i in range(n)]


def greedy_arrivals(specs: list[tuple[int, int, int]]) -> tuple[list[Seq], dict[int, list[Seq]]]:
    """Greedy sequences of (arrival step, prompt length, budget) specs, and them by arrival step."""
    seqs, arrivals = [], {}
    for step, length, budget in specs:
        seq = Seq(prompt=prompt(length, offset=len(seqs)), params=GREEDY, max_tokens=budget)
        arrivals.setdefault(step, []).append(seq)
        seqs.append(seq)
    return seqs, arrivals


@pytest.fixture(scope="module")
def decoder(llama_dir):
    return load_decoder(llama_dir)


def test_rows_joining_and_leaving_decode_as_alone(decoder):
    specs = [(0, 3, 20), (0, 12, 6), (2, 30, 20), (5, 5, 30), (5, 9, 4), (9, 30, 18), (9, 2, 12), (20, 17, 9),
             (28, 10, 20), (35, 6, 25), (45, 20, 15), (50, 8, 30), (52, 3, 20)]
    seqs, arrivals = greedy_arrivals(specs)
    # 3 rows for 13 sequences: rows move when one leaves; a 30-token prompt joining at column 14 shifts the
    # cache right; and with 56 columns for more steps than that, it must shift left to reuse columns.
    batch = SlotBatch(decoder, max_rows=3, cache_len=56)
    joined = drive(batch, arrivals)
    assert sum(joined) == len(seqs) and max(joined) >= 2 and len(joined) > batch.cache_len
    for seq in seqs:
        assert seq.finish_reason == "length" and seq.tokens == alone(decoder, seq)
    assert batch.rows == []


def test_a_long_prompt_is_prefilled_in_chunks_while_the_others_decode(decoder):
    running = [Seq(prompt=prompt(5, offset=i), params=GREEDY, max_tokens=30) for i in range(2)]
    long = Seq(prompt=prompt(45, offset=9), params=SamplingParams(temperature=0.8, seed=3), max_tokens=10)
    short = Seq(prompt=prompt(4, offset=5), params=GREEDY, max_tokens=8)
    batch = SlotBatch(decoder, max_rows=4, cache_len=96, prefill_chunk=8)
    assert not batch.stageable(long)  # an idle batch takes a whole prompt: nobody waits for it
    batch.step(running)
    assert batch.stageable(long) and batch.admissible([long]) == 0  # not whole, while rows decode
    batch.stage(long)
    assert batch.admissible([short]) == 1 and not batch.stageable(short)
    batch.step([short])  # the short prompt joins at once; the long one's first chunk runs beside it
    chunks = 1
    while not long.tokens:
        tokens_before = [len(s.tokens) for s in running]
        batch.step([])
        assert [len(s.tokens) for s in running] == [n + 1 for n in tokens_before]  # no step without tokens
        chunks += 1
    assert chunks == 6  # 45 tokens: five chunks of 8 staged, the last 5 run as the row joins
    while batch.live():
        batch.step([])
    for seq in [*running, long, short]:
        assert seq.finish_reason == "length" and seq.tokens == alone(decoder, seq)


def test_chunked_prefill_keeps_batches_exact_under_joins_shifts_and_releases(decoder):
    specs = [(0, 3, 20), (0, 30, 6), (2, 41, 12), (3, 4, 25), (4, 28, 9), (9, 2, 12), (12, 35, 8), (20, 17, 9)]
    seqs, arrivals = greedy_arrivals(specs)
    batch = SlotBatch(decoder, max_rows=3, cache_len=64, prefill_chunk=10)
    drive(batch, arrivals)
    for seq in seqs:
        assert seq.finish_reason == "length" and seq.tokens == alone(decoder, seq)
    assert batch.live() == [] and batch.staged is None


def test_sampled_and_penalised_rows_do_not_depend_on_their_neighbours(decoder):
    params = [SamplingParams(temperature=0.9, top_p=0.9, seed=1), SamplingParams(temperature=0.7, top_k=20, seed=2),
              SamplingParams(temperature=0, repetition_penalty=1.3), GREEDY]
    seqs = [Seq(prompt=prompt(4 + 3 * i, offset=i), params=p, max_tokens=15) for i, p in enumerate(params)]
    drive(SlotBatch(decoder, max_rows=4), {0: seqs[:2], 3: seqs[2:]})
    for seq in seqs:
        assert seq.tokens == alone(decoder, seq)


def test_stop_tokens_end_a_row_and_ignore_eos_keeps_it(decoder):
    free = Seq(prompt=prompt(6), params=GREEDY, max_tokens=12)
    drive(SlotBatch(decoder, max_rows=2), {0: [free]})
    stop = free.tokens[4]
    stopped = Seq(prompt=prompt(6), params=GREEDY, max_tokens=12, stop_ids=frozenset({stop}))
    going = Seq(prompt=prompt(6), params=GREEDY, max_tokens=12)
    drive(SlotBatch(decoder, max_rows=2), {0: [stopped, going]})
    assert stopped.finish_reason == "eos" and stopped.tokens == free.tokens[:free.tokens.index(stop)]
    assert going.tokens == free.tokens and going.finish_reason == "length"


def test_a_request_waits_until_the_cache_has_room(decoder):
    first = Seq(prompt=prompt(10), params=GREEDY, max_tokens=50)
    second = Seq(prompt=prompt(10, offset=3), params=GREEDY, max_tokens=50)
    batch = SlotBatch(decoder, max_rows=4, cache_len=64)
    joined = drive(batch, {0: [first], 5: [second]})
    # `first` holds columns up to 60, so `second` (which needs 50 more than the current column) waits for it.
    assert joined.index(1, 1) == 50 and first.tokens == alone(decoder, first) and second.tokens == alone(decoder, second)


def test_hf_backend_batches_run_to_completion_before_taking_more(gpt2_dir):
    decoder = load_decoder(gpt2_dir)
    batch = SlotBatch(decoder, max_rows=4)
    assert not batch.joinable
    seqs = [Seq(prompt=prompt(n, offset=n), params=GREEDY, max_tokens=m) for n, m in ((3, 8), (9, 4), (5, 6))]
    joined = drive(batch, {0: seqs[:2], 1: seqs[2:]})
    assert joined[:2] == [2, 0] and joined.index(1) == 8  # the third waits until both first rows are done
    for seq in seqs:
        assert seq.tokens == alone(decoder, seq)


def test_release_frees_rows_at_once(decoder):
    batch = SlotBatch(decoder, max_rows=2)
    a, b = (Seq(prompt=prompt(4, offset=i), params=GREEDY, max_tokens=40) for i in range(2))
    batch.step([a, b])
    assert batch.admissible([Seq(prompt=prompt(3), params=GREEDY, max_tokens=5)]) == 0
    batch.release([a])
    assert batch.live() == [b] and batch.admissible([Seq(prompt=prompt(3), params=GREEDY, max_tokens=5)]) == 1
    while batch.rows:  # b moved from row 1 to row 0, KV columns and all
        batch.step([])
    assert b.tokens == alone(decoder, b)


def test_a_cache_larger_than_the_free_memory_is_refused_before_allocating(decoder):
    assert available_memory() > 0
    # 2 layers x K and V x 2 heads x 16 dims x 4 bytes = 512 bytes a cell: 2 TB, more than any test machine has
    with pytest.raises(ConfigError, match=r"--max-batch 1000000 rows x --cache-len 4096 columns needs 1953.1 GiB"):
        SlotBatch(decoder, max_rows=1_000_000, cache_len=4096)
