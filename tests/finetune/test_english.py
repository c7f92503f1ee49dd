"""The English half of the word recognizer: sentences and word pairs as counted and read, and the lattice
decoder it shares with the Chinese half."""

from genforge.finetune.english import sentences, word_pairs
from genforge.finetune.lattice import best_path


def test_sentences_break_at_their_ends_not_at_decimal_points_links_or_chinese():
    text = "Profit rose 13.1 % to EUR 2.5 mn. Sales fell; see https://x.co/a $NOK 投诉 now"
    assert [[m.group() for m in s] for s in sentences(text)] == [
        ["Profit", "rose", "to", "EUR", "mn"], ["Sales", "fell"], ["see"], ["now"]]


def test_word_pairs_are_lower_case_with_sentence_edges():
    assert word_pairs("Profit rose. Sales fell") == {"^ profit": 1, "profit rose": 1, "rose $": 1,
                                                      "^ sales": 1, "sales fell": 1, "fell $": 1}


def test_best_path_weighs_the_pairs_against_the_costs():
    pairs = {("^", "a"): -1.0, ("a", "b"): -1.0, ("b", "$"): -1.0, ("^", "x"): -1.0, ("x", "b"): -9.0}
    log_p = lambda a, b: pairs.get((a, b), -5.0)  # noqa: E731
    assert best_path([[("x", 0.0), ("a", 3.0)], [("b", 0.0)]], log_p, "^", "$") == ["a", "b"]  # 3 < 8 nats gained
    assert best_path([[("x", 0.0), ("a", 9.0)], [("b", 0.0)]], log_p, "^", "$") == ["x", "b"]  # too costly
