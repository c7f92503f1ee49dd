"""The typo corrector in front of classifiers (`finetune classify --correct-typos`): its rules, and that the
classifier folder carries it to every loader (predict, compress)."""

import pytest
from typer.testing import CliRunner

from genforge.cli import app
from genforge.errors import ArtifactError
from genforge.finetune.classifier import load_classifier, predict_probs
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig
from genforge.finetune.typos import VOCABULARY, TypoCorrector, load_corrector, word_counts

NEWS = ["Operating profit rose to EUR 13.1 mn", "Net sales rose and operating profit rose",
        "Sales fell , the use of capacity fell", "The use of cash rose", "Nokia said profit fell"]


@pytest.fixture(scope="module")
def corrector():
    return TypoCorrector(word_counts(NEWS))


@pytest.mark.parametrize("typo,meant", [
    ("porfit", "profit"),  # two letters swapped
    ("proft", "profit"),  # one deleted
    ("profiit", "profit"),  # one inserted
    ("profut", "profit"),  # a keyboard neighbour
    ("ｐｒｏｆｉｔ", "profit"),  # full-width letters (NFKC)
    ("rse", "rose"),  # English alone says "use"; the training texts say "rose" is likelier here
])
def test_a_typo_of_a_training_word_is_corrected(corrector, typo, meant):
    assert corrector(f"Operating {typo} in the quarter") == f"Operating {meant} in the quarter"


def test_a_capitalised_word_is_corrected_where_a_sentence_starts(corrector):
    assert corrector("Operatng profit fell. Operatng profit rose") == "Operating profit fell. Operating profit rose"
    assert corrector('Nokia said: "Operatng profit rose"') == 'Nokia said: "Operating profit rose"'


@pytest.mark.parametrize("text", [
    "PROFT rose",  # acronym-like upper case: left
    "proFit rose",  # mixed case
    "Nokai profit",  # a name one edit from an English word the training texts hardly use
    "Operating profits rose",  # a final s added or dropped is no typo worth reading back
    "profit3 rose 13.1",  # digits
    "利润 rose",  # another script
    "fiscal profit",  # a known English word, even if the training texts lack it
    "the Operatng unit",  # a capital inside a sentence marks a name
    "see https://t.co/proift @proift $proift #proift",  # links, handles, tickers, tags
    "Net sales rose and operating proi...",  # a word cut off by a truncated post (NFKC makes … three dots)
    "the proift's share",  # a word with an apostrophe
    "送的大杯grande, call 177xxxx0056",  # glued to Chinese or digits: a brand name, a code
])
def test_what_is_not_a_typo_of_a_training_word_is_left_alone(corrector, text):
    assert corrector(text) == text


@pytest.mark.parametrize("typo,meant", [
    ("Net sales rose nd operating profit rose", "Net sales rose and operating profit rose"),  # a listed rare word
    ("Sales fell , the sue of capacity fell", "Sales fell , the use of capacity fell"),  # a common one, out of place
    ("Operating profit rsoe to EUR 13.1 mn", "Operating profit rose to EUR 13.1 mn"),
    ("Nokia said profit fel", "Nokia said profit fell"),  # short words too
])
def test_a_typo_that_makes_another_word_is_read_in_context(corrector, typo, meant):
    assert corrector(typo) == meant


def test_word_counts_are_lower_case_and_skip_numbers():
    assert word_counts(["Profit rose 13.1 %, profit's up", "ＰＲＯＦＩＴ"]) == {
        "profit": 2, "rose": 1, "profit's": 1, "up": 1,
        "^ profit": 2, "profit rose": 1, "rose profit's": 1, "profit's up": 1, "up $": 1, "profit $": 1}  # 13.1 ends none


def test_a_vocabulary_without_word_pairs_still_reads_typos():
    words = {k: v for k, v in word_counts(NEWS).items() if " " not in k}  # as saved before pairs were counted
    assert TypoCorrector(words)("Operating porfit rsoe") == "Operating profit rose"


def test_a_classifier_trained_with_it_reads_typos_as_the_words_meant(tmp_path, bert_dir, sentiment_csv):
    def tiny(out, **flags):
        return ClassifyConfig(model=bert_dir, data=sentiment_csv, out=out, max_steps=2, batch_size=8, seq_len=32,
                              eval_every=0, bf16=False, **flags)

    out = classify(tiny(tmp_path / "run", correct_typos=True))
    assert "profits\t" in (out / VOCABULARY).read_text(encoding="utf-8")
    model, tokenizer, _ = load_classifier(out)
    clean, typos = predict_probs(model, tokenizer, ["profits rose sharply", "porfits rsoe sharpyl"], seq_len=32,
                                 multi_label=False)
    assert clean.tolist() == typos.tolist()

    squeezed = tmp_path / "int8"  # compress keeps the corrector with the model
    result = CliRunner().invoke(app, ["compress", "--model", str(out), "--method", "int8", "--out", str(squeezed),
                                      "--measure-steps", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert load_classifier(squeezed)[0].typos.counts == model.typos.counts

    plain = classify(tiny(tmp_path / "plain"))
    assert not (plain / VOCABULARY).exists() and load_classifier(plain)[0].typos is None


def test_a_damaged_vocabulary_is_one_line(tmp_path):
    (tmp_path / VOCABULARY).write_text("profit\t3\nrose\n", encoding="utf-8")
    with pytest.raises(ArtifactError, match=f"{VOCABULARY} is corrupt .*copy it again"):
        load_corrector(tmp_path)
