"""The synthetic corpus: deterministic, leak-free, exact targets, and knobs that do what they claim."""
import pytest

from hydralib.data import (HARD_COMPONENTS, PRIMITIVE_TASKS, SYNTHETIC_COMPONENTS, apply_component,
                           conflict_statistics, input_word, make_corpus, make_primitive_corpus, prompt_form)
from hydralib.data.synthetic import MARKERS, SHARED_WORDINGS


def small(**kwargs):
    return make_corpus(**{"n_train": 400, "n_test": 80, **kwargs})


def test_same_seed_same_rows_other_seed_other_rows():
    assert small(seed=3) == small(seed=3)
    assert small(seed=3)["train"] != small(seed=4)["train"]


@pytest.mark.parametrize("conflict", [0.0, 0.5, 1.0])
def test_train_and_test_are_disjoint(conflict):
    corpus = make_corpus(n_components=len(SYNTHETIC_COMPONENTS), conflict=conflict, seed=1)
    train, test = corpus["train"], corpus["test"]
    assert {r["input"] for r in train}.isdisjoint(r["input"] for r in test)
    assert {(r["instruction"], r["input"]) for r in train}.isdisjoint((r["instruction"], r["input"]) for r in test)
    assert len(train) == 2000 and len(test) == 400


def test_outputs_are_the_component_transforms_and_labels_match():
    corpus = small(n_components=len(SYNTHETIC_COMPONENTS), conflict=0.5)
    assert corpus["components"] == list(SYNTHETIC_COMPONENTS)
    for row in corpus["train"] + corpus["test"]:
        assert set(row) == {"instruction", "input", "output", "component", "component_name"}
        assert row["component_name"] == corpus["components"][row["component"]]
        assert row["output"] == apply_component(row["component_name"], row["input"])


def test_transforms_on_an_example():
    expected = {"rotate_left": "bcda", "reverse_upper": "DCBA", "mirror": "abcddcba", "swap_pairs": "badc",
                "sort": "abcd", "double": "aabbccdd", "alternate_case": "aBcD", "drop_vowels": "bcd",
                "swap_ends": "dbca", "ends_upper": "AbcD", "shift": "bcde"}
    assert {name: apply_component(name, "abcd") for name in SYNTHETIC_COMPONENTS} == expected
    assert apply_component("shift", "zz") == "aa"


def test_canonical_order_has_one_hard_component_last():
    assert len(SYNTHETIC_COMPONENTS) >= 10
    assert HARD_COMPONENTS <= set(SYNTHETIC_COMPONENTS)
    for k in range(1, len(SYNTHETIC_COMPONENTS) + 1):
        names = make_corpus(n_components=k, n_train=k, n_test=1)["components"]
        assert names == list(SYNTHETIC_COMPONENTS[:k])
        assert len(HARD_COMPONENTS & set(names)) <= 1
    assert SYNTHETIC_COMPONENTS[-1] in HARD_COMPONENTS


def test_components_are_balanced():
    counts = {}
    for row in make_corpus(n_components=3, n_train=100, n_test=10)["train"]:
        counts[row["component"]] = counts.get(row["component"], 0) + 1
    assert sorted(counts.values()) == [33, 33, 34]


def test_more_components_more_targets_per_input():
    stats = {k: conflict_statistics(small(n_components=k)["train"]) for k in (1, 2, 4, 8)}
    assert [stats[k]["components"] for k in (1, 2, 4, 8)] == [1, 2, 4, 8]
    assert stats[1]["targets_per_input"] == 1.0
    assert stats[2]["targets_per_input"] == 2.0  # rotate_left and reverse_upper never agree
    assert stats[2]["targets_per_input"] < stats[4]["targets_per_input"] < stats[8]["targets_per_input"] <= 8


def test_conflict_knob():
    k = 8
    s0, s5, s1 = (conflict_statistics(small(n_components=k, conflict=c)["train"]) for c in (0.0, 0.5, 1.0))
    # Own wording only, both forms, shared form only: k, 2k, k distinct instructions.
    assert (s0["instructions"], s5["instructions"], s1["instructions"]) == (k, 2 * k, k)
    assert s0["shared_form_fraction"] == 0.0 < s5["shared_form_fraction"] < 1.0 == s1["shared_form_fraction"]
    assert abs(s5["shared_form_fraction"] - 0.5) < 0.1
    # A cue-free prompt has one answer without conflict and every component's answer with full conflict.
    assert s0["targets_per_prompt_form"] == 1.0 < s5["targets_per_prompt_form"] < s1["targets_per_prompt_form"]
    assert s1["targets_per_prompt_form"] == s1["targets_per_input"] == s0["targets_per_input"]


def test_conflict_changes_only_instructions():
    low, high = small(conflict=0.0), small(conflict=1.0)
    strip = lambda rows: sorted((r["input"], r["output"], r["component"]) for r in rows)
    assert strip(low["train"]) == strip(high["train"]) and strip(low["test"]) == strip(high["test"])
    assert {r["instruction"] for r in high["train"]} == {"?" + chr(ord("A") + i) for i in range(8)}


@pytest.mark.parametrize("kwargs, named", [
    ({"n_components": 0}, "n_components=0"),
    ({"n_components": len(SYNTHETIC_COMPONENTS) + 1}, f"n_components={len(SYNTHETIC_COMPONENTS) + 1}"),
    ({"conflict": 1.5}, "conflict=1.5"),
    ({"conflict": -0.1}, "conflict=-0.1"),
    ({"n_train": 0}, "n_train=0"),
    ({"n_test": 2.5}, "n_test=2.5"),
    ({"max_word_length": 2}, "max_word_length=2"),
    ({"max_word_length": 13}, "max_word_length=13"),
])
def test_bad_arguments_are_refused_by_name(kwargs, named):
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        make_corpus(**kwargs)


def test_unknown_component_and_bad_input_are_refused():
    with pytest.raises(ValueError, match="'nope'.*rotate_left"):
        apply_component("nope", "abc")
    with pytest.raises(ValueError, match="'AB1'"):
        apply_component("sort", "AB1")


def test_rows_stay_short():
    for corpus in (make_corpus(n_components=len(SYNTHETIC_COMPONENTS), conflict=0.0), make_primitive_corpus()):
        rows = corpus["train"] + corpus["test"]
        assert max(len(r["instruction"] + r["input"] + r["output"]) for r in rows) < 40
        assert all(r["output"] for r in rows)


def test_component_words_have_3_to_max_word_length_letters_and_primitives_keep_3_to_6():
    for longest in (4, 6):
        rows = small(max_word_length=longest)
        lengths = {len(r["input"]) for r in rows["train"] + rows["test"]}
        assert lengths == set(range(3, longest + 1))
    primitive_words = [r["input"] for r in make_primitive_corpus()["train"] if r["component_name"] == "copy"]
    assert {len(w) for w in primitive_words} == {3, 4, 5, 6}


def test_primitive_corpus():
    corpus = make_primitive_corpus(n_train=140, n_test=35, seed=2)
    assert corpus == make_primitive_corpus(n_train=140, n_test=35, seed=2)
    assert corpus["components"] == list(PRIMITIVE_TASKS)
    train, test = corpus["train"], corpus["test"]
    assert len(train) == 140 and len(test) == 35
    assert {r["component"] for r in train} == set(range(len(PRIMITIVE_TASKS)))
    assert {r["input"] for r in train}.isdisjoint(r["input"] for r in test)
    for row in train + test:
        name, text, out = row["component_name"], row["input"], row["output"]
        expected = {"copy": text, "uppercase": text.upper(), "reverse": text[::-1], "duplicate": text * 2,
                    "drop_first": text[1:], "length": str(len(text)), "sort_digits": "".join(sorted(text))}[name]
        assert out == expected and PRIMITIVE_TASKS[row["component"]] == name
    assert all(r["input"].isdigit() for r in train if r["component_name"] == "sort_digits")
    with pytest.raises(ValueError, match="n_train=0"):
        make_primitive_corpus(n_train=0)


# --- identifiability ------------------------------------------------------------------------------

def _digest(corpus) -> str:
    import hashlib
    import json
    return hashlib.sha256(json.dumps(corpus, sort_keys=True).encode()).hexdigest()


def test_identifiability_one_is_the_corpus_of_before_the_knob_byte_for_byte():
    # digests of make_corpus' output at ea143ff, before the knob existed
    assert _digest(make_corpus(seed=0)) == "2491a298fc0c4449349d5a9712cb9691abb5e746a6c5de56c14e0509e1736025"
    assert _digest(small(seed=3, conflict=0.5)) == "713dd4fd52512518ef84a36062975b6638636da62de3a68e8ce32f69d7c0f0c0"
    assert small(seed=3, conflict=0.5, identifiability=1.0) == small(seed=3, conflict=0.5)
    assert small(seed=3, identifiability=0.95) != small(seed=3)  # the knob does something


@pytest.mark.parametrize("conflict", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("level", [0.0, 0.4, 1.0])
def test_every_answer_stays_exact_and_unnamed_rows_carry_their_marker(conflict, level):
    corpus = small(conflict=conflict, identifiability=level)
    own = {_own_wording(i) for i in range(8)}
    for row in corpus["train"] + corpus["test"]:
        word = input_word(row)
        assert row["output"] == apply_component(row["component_name"], word)
        named = row["instruction"] in own or row["input"] == word
        if row["input"] != word:
            assert row["input"] == MARKERS[row["component"]] + " " + word
        assert named or level < 1
        if level == 0.0:  # nothing in the instruction is tied to the component
            assert row["instruction"] in SHARED_WORDINGS or prompt_form(row) == "?"


def _own_wording(i):
    rows = make_corpus(n_components=8, conflict=0.0, n_train=8, n_test=1)["train"]
    return next(r["instruction"] for r in rows if r["component"] == i)


def test_at_zero_the_instruction_is_independent_of_the_component():
    rows = make_corpus(conflict=1.0, identifiability=0.0, n_train=4000)["train"]
    right_cue = sum(row["instruction"] == "?" + chr(ord("A") + row["component"]) for row in rows) / len(rows)
    assert abs(right_cue - 1 / 8) < 0.03  # a random cue, right one time in eight
    wordings = make_corpus(conflict=0.0, identifiability=0.0, n_train=4000)["train"]
    for c in range(8):  # each component uses each shared wording about as often
        mine = [r["instruction"] for r in wordings if r["component"] == c]
        assert abs(mine.count(SHARED_WORDINGS[0]) / len(mine) - 1 / len(SHARED_WORDINGS)) < 0.1


def test_the_level_changes_only_unnamed_rows_and_lower_levels_unname_more():
    levels = [small(conflict=0.5, identifiability=p) for p in (1.0, 0.7, 0.3, 0.0)]
    keep = lambda corpus: [(input_word(r), r["output"], r["component"]) for r in corpus["train"]]
    assert all(keep(c) == keep(levels[0]) for c in levels)  # same words, components and order
    unnamed = [{i for i, r in enumerate(c["train"]) if r["input"] != input_word(r)} for c in levels]
    assert unnamed[0] == set() and unnamed[0] < unnamed[1] < unnamed[2] < unnamed[3] == set(range(400))
    assert abs(len(unnamed[2]) / 400 - 0.7) < 0.1
    statistics = conflict_statistics(levels[3]["train"])
    assert statistics["targets_per_input"] == conflict_statistics(levels[0]["train"])["targets_per_input"]


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "high"])
def test_a_bad_identifiability_is_refused_by_name(value):
    with pytest.raises(ValueError, match=f"identifiability={value!r}".replace(".", r"\.")):
        small(identifiability=value)
