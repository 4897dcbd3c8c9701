"""The operating point file: what it holds is checked, the methods take its rates, and claims refuse its tuning seeds."""
import copy

import pytest

from hydralib.methods import FULL_FINETUNING, full_finetuning, hydra, lora, split
from hydralib.operating_point import (check_evaluation_seeds, check_point, data_options, load_point, tuned_methods,
                                      tuning_seeds, write_point)

HYDRA = next(iter(hydra(8, 8)))


def point(**changes) -> dict:
    base = {"rates": {FULL_FINETUNING: 1e-3, "ranks": {"8": 5e-3, "32": 3e-3}, "methods": {}},
            "data": {"max_word_length": 4}, "figure2": {"rows_per_component": 600},
            "provenance": {s: {"split": "validation", "seeds": [100, 101, 102]} for s in ("rates", "data", "figure2")}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            base[section][field] = value
        else:
            base[section] = value
    return base


def test_the_shipped_point_loads_and_gives_every_rank_the_notebooks_run_a_rate():
    shipped = load_point()
    methods = tuned_methods({**full_finetuning(), **lora(8, 16, 32), **split(4, 8)}, point=shipped)
    assert methods[FULL_FINETUNING]["lr"] == shipped["rates"][FULL_FINETUNING]
    assert all(methods[name]["lr"] == shipped["rates"]["ranks"][str(r)]
               for name, r in (("LoRA r8", 8), ("LoRA r16", 16), ("LoRA r32", 32), ("Split 4x8 learned", 8)))


def test_a_method_tuned_on_its_own_takes_its_rate_and_explicit_rates_replace_the_points():
    tuned = point(rates__methods={HYDRA: 7e-3})
    configs = {**full_finetuning(), **lora(8), **hydra(8, 8), **hydra(8, 8, gate="cluster")}
    methods = tuned_methods(configs, point=tuned, lr_floor=0.1)
    assert [methods[n]["lr"] for n in configs] == [1e-3, 5e-3, 7e-3, 5e-3]  # the cluster gate: its rank's
    assert list(methods) == list(configs) and methods[HYDRA]["lr_floor"] == 0.1
    assert methods[HYDRA]["adapter"] == configs[HYDRA]
    explicit = tuned_methods(configs, {8: 2e-3}, 4e-4, point=tuned)
    assert [explicit[n]["lr"] for n in configs] == [4e-4, 2e-3, 2e-3, 2e-3]
    with pytest.raises(ValueError, match="rank 16"):
        tuned_methods(lora(16), point=tuned)


@pytest.mark.parametrize("changes, message", [
    ({"rates__methods": {HYDRA: 0}}, "numbers > 0"),
    ({"rates__ranks": {"eight": 5e-3}}, "whole numbers"),
    ({"data__max_word_length": 2}, "3..12"),
    ({"figure2__rows_per_component": 0}, ">= 1"),
    ({"provenance__rates": {"split": "train", "seeds": []}}, "split in validation, test, none"),
])
def test_a_bad_point_is_refused_naming_what_is_wrong(changes, message):
    with pytest.raises(ValueError, match=message):
        check_point(point(**changes))
    missing = point()
    del missing["figure2"]
    with pytest.raises(ValueError, match="sections"):
        check_point(missing)


def test_claims_refuse_the_seeds_tuned_on_and_name_sections_chosen_on_test_rows():
    tuned = point()
    assert tuning_seeds(tuned) == {100, 101, 102}
    with pytest.raises(ValueError, match=r"seeds \[101\]"):
        check_evaluation_seeds([0, 101], tuned)
    assert check_evaluation_seeds([0, 1], tuned).startswith("no setting")
    old = point(provenance__rates={"split": "test", "seeds": [0]})
    note = check_evaluation_seeds([0, 1, 2], old)
    assert "rates on the test rows of seed(s) 0" in note and "data" not in note
    assert check_evaluation_seeds([1, 2], old).startswith("no setting")


def test_a_word_length_other_than_the_corpus_default_is_a_data_key():
    assert data_options(point()) == {}
    assert data_options(point(data__max_word_length=5)) == {"max_word_length": 5}


def test_a_written_point_reads_back_and_a_bad_one_is_not_written(tmp_path):
    path = tmp_path / "point.json"
    written = point(rates__methods={HYDRA: 7e-3})
    write_point(written, path)
    assert load_point(path) == written
    bad = copy.deepcopy(written)
    bad["rates"][FULL_FINETUNING] = -1
    with pytest.raises(ValueError, match="numbers > 0"):
        write_point(bad, path)
    assert load_point(path) == written
