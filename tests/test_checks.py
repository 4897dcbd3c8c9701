"""The shared argument checks: a bad value gets a message naming it and what is allowed."""
import numpy as np
import pytest

from hydralib.checks import check_choice, check_int


def test_check_choice_names_the_value_and_the_choices():
    check_choice("features", "tfidf", ("tfidf", "sentence"))
    with pytest.raises(ValueError, match="features must be one of tfidf, sentence, got features='bow'"):
        check_choice("features", "bow", ("tfidf", "sentence"))


@pytest.mark.parametrize("value", [0, True, 2.0, "3", 13])
def test_check_int_refuses_what_is_not_an_integer_in_range(value):
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.12, got k="):
        check_int("k", value, 1, 12)


def test_check_int_accepts_numpy_integers_and_open_ranges():
    check_int("k", np.int64(5), 1, 12)
    check_int("n_train", 10**9, 1)
    with pytest.raises(ValueError, match="n_train must be an integer >= 1"):
        check_int("n_train", 0, 1)
