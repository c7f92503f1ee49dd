"""The Chinese half of `--correct-typos`: same-sound characters and glued pinyin read back from the context the
training texts give, text the bigrams explain left alone, invisible characters dropped."""

import pytest

from genforge.finetune.homophones import HomophoneReader, cjk_counts, split_syllables
from genforge.finetune.typos import TypoCorrector, load_corrector, save_vocabulary, word_counts

REVIEWS = ["我要投诉这家店", "送餐太慢我要投诉", "投诉了也没用", "外卖未到", "外卖未到就确认了", "外卖未到很生气",
           "味道很好", "味道不错", "味道一般", "外卖小哥很辛苦", "小哥辛苦了", "难吃死了", "真难吃", "太难吃了"] * 5


@pytest.fixture(scope="module")
def reader():
    return HomophoneReader(word_counts(REVIEWS))


def test_counts_are_characters_and_adjacent_pairs():
    assert cjk_counts("投诉,投") == {"投": 2, "诉": 1, "投诉": 1, "^投": 2, "诉$": 1, "投$": 1}  # edges too
    counts = word_counts(["Good 投诉 app"])
    assert counts == {"good": 1, "app": 1, "投": 1, "诉": 1, "投诉": 1, "^投": 1, "诉$": 1,  # English words stay,
                      "^ good": 1, "good $": 1, "^ app": 1, "app $": 1}  # Chinese breaks their sentences


@pytest.mark.parametrize("latin,syllables", [("tousu", ["tou", "su"]), ("xiao", ["xiao"]), ("zhuang", ["zhuang"]),
                                             ("app", None), ("wifi", None)])
def test_latin_runs_split_into_the_fewest_pinyin_syllables(latin, syllables):
    assert split_syllables(latin) == syllables


@pytest.mark.parametrize("written,meant", [
    ("我要头诉", "我要投诉"),  # a same-sound character the context does not support
    ("我要tou诉", "我要投诉"),  # the reading itself, glued to the characters
    ("我要tousu", "我要投诉"),  # two readings in one run
    ("外卖xiao哥很辛苦", "外卖小哥很辛苦"),
    ("nan吃死了", "难吃死了"),
    ("小哥辛苦乐", "小哥辛苦了"),  # 了 ends a clause, 乐 does not
    ("我要投诉,tousu!", "我要投诉,投诉!"),  # pinyin alone between punctuation in a Chinese text
    ("外卖味到", "外卖未到"),  # context decides, not frequency: 味 is the commoner "wei" in these texts
])
def test_same_sound_misspellings_are_read_back(reader, written, meant):
    assert reader(written) == meant


@pytest.mark.parametrize("text", [
    "外卖未到", "味道很好",  # both "wei" characters where the bigrams explain them
    "在Shanghai好吃",  # the tail of a capitalised word is not pinyin glued to the text
    "好评app",  # Latin letters that are not pinyin
    "tou su",  # no Chinese character in the run
    "我要 tou 诉",  # not glued
    "太难吃了,tou su",
    "Good food",
])
def test_what_the_training_texts_explain_is_left_alone(reader, text):
    assert reader(text) == text


def test_a_character_seen_once_is_no_candidate():
    reader = HomophoneReader(word_counts(REVIEWS + ["头诉"]))  # 头 occurs once: below MIN_COUNT
    assert reader("我要投诉") == "我要投诉"
    assert "头" not in reader.by_reading["tou"]


def test_the_corrector_drops_invisible_characters_and_keeps_its_reading_when_saved(tmp_path):
    counts = word_counts(REVIEWS + ["Operating profit rose"])
    corrector = TypoCorrector(counts)
    assert corrector("我要\u200b头\u200d诉") == "我要投诉"
    assert corrector("pro\u200bfit\u2060 rose") == "profit rose"
    save_vocabulary(counts, tmp_path)
    assert load_corrector(tmp_path)("我要tou诉") == "我要投诉"


def test_a_model_trained_on_english_only_reads_chinese_as_written():
    assert TypoCorrector(word_counts(["Operating profit rose"]))("我要头诉") == "我要头诉"


def test_a_vocabulary_counted_before_the_reader_reads_chinese_as_written():
    old = {k: v for k, v in word_counts(REVIEWS).items() if "^" not in k and "$" not in k}  # no run edges
    assert HomophoneReader(old)("我要头诉") == "我要头诉"
