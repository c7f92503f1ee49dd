"""`gan text` on a real packed folder: LSTM and decoder-preset generators, both adversarial variants."""

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from genforge.artifacts import read_manifest
from genforge.errors import ArtifactError, ConfigError, DataError
from genforge.paradigms.config import MAX_GAN_LEN, TextGanConfig
from genforge.paradigms.gan_text import fixed_rows, gan_text, ngrams, text_scores, until_eos


def test_fixed_rows_and_ngrams():
    import numpy as np

    rows = fixed_rows([np.array([5, 6]), np.array([1, 2, 3, 4, 5])], 4, eos=2)
    assert rows.tolist() == [[5, 6, 2, 2], [1, 2, 3, 4]]
    assert ngrams([[1, 2, 3, 4, 5]]) == [(1, 2, 3, 4), (2, 3, 4, 5)]
    assert until_eos([[5, 6, 2, 2], [1, 3, 4, 5]], eos=2) == [[5, 6, 2], [1, 3, 4, 5]]


class StopsAfterThreeWords(torch.nn.Module):
    """A degenerate generator: three uniformly random words, then EOS to the end of the row."""

    def __init__(self, vocab: int, eos: int):
        super().__init__()
        self.vocab, self.eos = vocab, eos
        self.unused = torch.nn.Parameter(torch.zeros(1))  # sampling reads the device off a parameter

    def run(self, input_ids, state=None):
        read = input_ids.shape[1] + (state or 0)  # the start token and the tokens generated so far
        logits = torch.zeros(len(input_ids), input_ids.shape[1], self.vocab)
        logits[:, -1, self.eos] = -1e9 if read <= 3 else 1e9
        return logits, read

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_ngram_miss_does_not_count_the_eos_padding_as_text():
    """Short training texts padded with EOS put EOS EOS EOS EOS among the reference 4-grams: a generator writing three
    random words and then padding scored ngram_miss 0.21 (7 of its 9 4-grams hit), as if it wrote real text."""
    import numpy as np

    eos, vocab, length = 0, 50, 12
    rng = np.random.default_rng(0)
    texts = [rng.integers(1, vocab, size=rng.integers(3, 7)) for _ in range(300)]
    rows = fixed_rows(texts, length, eos)
    reference = set(ngrams(until_eos(rows.tolist(), eos)))
    scores = text_scores(StopsAfterThreeWords(vocab, eos), rows[:20], reference, 200, start=eos, eos=eos, seed=0)
    assert scores["ngram_miss"] > 0.95


@pytest.mark.parametrize("generator,variants", [("lstm", ["seqgan", "gumbel"]), ("tiny", ["gumbel"])])
def test_gan_text_runs(packed, tmp_path, generator, variants):
    cfg = TextGanConfig(data=packed, out=tmp_path / "gan", generator=generator, variant=variants, seq_len=8,
                        embed_size=16, hidden_size=16, batch_size=8, mle_steps=6, disc_pretrain_steps=2,
                        adv_epochs=2, eval_every=1, eval_samples=16, rollouts=2)
    results = gan_text(cfg)
    assert set(results["rows"]) == {"mle", *variants}
    for row in results["rows"].values():
        assert 0 <= row["ngram_miss"] <= 1 and 0 < row["distinct_4"] <= 1 and row["nll_val"] > 0
    manifest = json.loads((cfg.out / "manifest.json").read_text())
    assert manifest["stage"] == "gan.text" and manifest["parent"]["stage"] == "data.pack"
    assert (cfg.out / variants[0] / "samples.txt").read_text().count("\n") == 20


def test_a_rerun_on_data_without_documents_keeps_the_earlier_run(packed, no_val_documents, tmp_path):
    cfg = TextGanConfig(data=packed, out=tmp_path / "gan", variant=["gumbel"], seq_len=8, embed_size=16,
                        hidden_size=16, batch_size=8, mle_steps=2, disc_pretrain_steps=1, adv_epochs=1, eval_every=1,
                        eval_samples=16)
    gan_text(cfg)
    finished = read_manifest(cfg.out, "gan.text")
    with pytest.raises(DataError, match="val.bin holds no documents"):
        gan_text(replace(cfg, data=no_val_documents))
    assert read_manifest(cfg.out, "gan.text") == finished


def test_seq_len_is_bounded():
    TextGanConfig(data="d", out="o", seq_len=MAX_GAN_LEN).check()
    with pytest.raises(ConfigError, match=f"--seq-len must be at most {MAX_GAN_LEN}, got 100000: text GANs"):
        TextGanConfig(data="d", out="o", seq_len=100000).check()


def test_absurd_generator_sizes_are_refused_before_the_output_is_touched(packed, tmp_path):
    cfg = TextGanConfig(data=packed, out=tmp_path / "gan", embed_size=16, hidden_size=10**7)
    with pytest.raises(ConfigError, match=r"^--embed-size 16 --hidden-size 10000000: a model of [\d,]+ parameters"):
        gan_text(cfg)
    assert not cfg.out.exists()


def test_a_redo_keeps_no_phase_of_the_earlier_run_and_resume_needs_a_run(packed, tmp_path):
    """A redo with other --variant kept the earlier run's variant folder (and its events) in a folder whose
    manifest no longer mentions it; --resume without a run silently started a fresh one."""
    cfg = TextGanConfig(data=packed, out=tmp_path / "gan", variant=["seqgan"], seq_len=8, embed_size=16,
                        hidden_size=16, batch_size=8, mle_steps=2, disc_pretrain_steps=1, adv_epochs=1, eval_every=1,
                        eval_samples=16, rollouts=1)
    gan_text(cfg)
    gan_text(replace(cfg, variant=["gumbel"]))
    assert not (cfg.out / "seqgan").exists() and (cfg.out / "gumbel" / "samples.txt").is_file()
    assert len(list((cfg.out / "mle" / "logs").glob("events.out.tfevents.*"))) == 1
    with pytest.raises(ArtifactError, match="nothing to resume: .*mle/checkpoints/latest does not exist"):
        gan_text(replace(cfg, out=tmp_path / "none", resume=True))
    assert not (tmp_path / "none").exists()


def test_nll_val_is_per_token_of_the_texts_not_of_their_eos_padding():
    """nll_val averaged over whole fixed-length rows: the EOS padding after each short text counted as tokens (here
    56% of them; EOS being likely, as after MLE on padded rows, they pulled the mean from the texts' 3.47 nats to 1.83)."""
    import numpy as np

    from genforge.paradigms.sequence import LstmGenerator, token_log_probs

    eos, vocab, length = 0, 30, 10
    rng = np.random.default_rng(0)
    rows = fixed_rows([rng.integers(1, vocab, size=rng.integers(2, 6)) for _ in range(64)], length, eos)
    torch.manual_seed(0)
    generator = LstmGenerator(vocab, 8, 8)
    with torch.no_grad():
        generator.head.bias[eos] = 4.0  # like a generator trained on the padding: EOS is likely
    scores = text_scores(generator, rows, set(), 4, start=eos, eos=eos, seed=0)
    with torch.no_grad():
        log_probs = token_log_probs(generator, rows, eos)
    text = [(log_probs[i, :len(t)].sum().item(), len(t)) for i, t in enumerate(until_eos(rows.tolist(), eos))]
    assert scores["nll_val"] == pytest.approx(-sum(s for s, _ in text) / sum(n for _, n in text), rel=1e-6)
