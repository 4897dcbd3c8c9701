"""Token lengths chosen from the data: the budget, what it truncates, and the rows left out of training."""
from types import SimpleNamespace

import pytest

from hydralib.data.lengths import fitting_rows, length_budget, measure, truncation_markdown, truncation_table


class WordTokenizer(SimpleNamespace):
    """One token per word: lengths are easy to count by hand."""
    bos_token_id = 1

    @staticmethod
    def encode(text, add_special_tokens=False):
        return [5] * len(text.split())


def rows(source, prompt_words, answer_words):
    return [{"source": source, "instruction": " ".join(["w"] * p), "input": "", "output": " ".join(["a"] * a)}
            for p, a in zip(prompt_words, answer_words)]


def test_lengths_count_bos_template_response_and_eos():
    (length,) = measure(rows("gsm8k", [3], [4]), WordTokenizer(), "compact")
    # bos + "w w w =" (the compact template adds " =": the "=" is its own word here) + 4 words + eos
    assert length == {"source": "gsm8k", "prompt": 1 + 4, "response": 4 + 1, "total": 10}


def test_the_budget_is_the_largest_per_source_quantile_rounded_up_and_its_table_says_what_it_cuts():
    data = rows("gsm8k", [10] * 99 + [200], [20] * 98 + [60, 90]) + rows("mmlu", [30] * 50, [1] * 50)
    lengths = measure(data, WordTokenizer(), "compact")
    budget = length_budget(lengths, quantile=0.98)
    # gsm8k totals: 33 (98 rows), 73, 293; the 0.98 quantile is a measured row, the next one up from 33.8
    # (an interpolation would take 33.8 and leave 2 rows, 2%, over): 73, rounded up to 80; mmlu's are all 34 -> 40.
    # Answers (eos included): 21 (98 rows), 61, 91 -> 61 -> 64
    assert budget["max_length"] == 80 and budget["max_new_tokens"] == {"gsm8k": 64}
    table = truncation_table(lengths, budget)
    # fewer than 1 - quantile of a source is longer than its budget
    assert table["gsm8k"]["over_max_length"] == pytest.approx(0.01) and table["mmlu"]["over_max_length"] == 0
    assert table["gsm8k"]["answers_cut_off"] == pytest.approx(0.01) and "answers_cut_off" not in table["mmlu"]
    text = truncation_markdown(table)
    assert "| gsm8k | 100 | 73 | 80 | 1.0% | 64 | 1.0% |" in text and "scored by likelihood" in text
    with pytest.raises(ValueError, match="quantile must be in \\(0, 1\\], got quantile=0"):
        length_budget(lengths, quantile=0)


def test_rows_that_do_not_fit_are_left_out_and_counted_never_cut():
    data = rows("gsm8k", [3, 30, 4], [2, 2, 40]) + rows("mmlu", [3], [1])
    kept, dropped = fitting_rows(data, WordTokenizer(), "compact", max_length=20)
    assert kept == [data[0], data[3]] and dropped == {"gsm8k": 2}
