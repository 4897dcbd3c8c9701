"""The confirmatory sweep's protocol: tuning seeds only, validation rows, the decisions and what they write."""
import pytest

from hydralib import tuning
from hydralib.methods import FULL_FINETUNING, hydra, split
from hydralib.operating_point import EVALUATION_SEEDS, load_point
from hydralib.store import RunStore

HYDRA, SPLIT = next(iter(hydra(8, 8))), next(iter(split(4, 8)))
SMALL = dict(n_components=2, steps=3, pretrain_steps=300, n_train=64, n_test=8, device="cpu")


def test_evaluation_seeds_and_unknown_families_are_refused():
    assert tuning.check_tuning_seeds([100, 101, 102]) == [100, 101, 102]
    with pytest.raises(ValueError, match=r"seeds \[0\] are evaluation seeds"):
        tuning.check_tuning_seeds([0, 100])
    with pytest.raises(ValueError, match="non-empty"):
        tuning.check_tuning_seeds([])
    with pytest.raises(ValueError, match="unknown families \\['LoRA r7'\\]"):
        tuning.check_grid({"LoRA r7": [1e-3]})
    with pytest.raises(ValueError, match="rates > 0"):
        tuning.check_grid({"LoRA r8": [0]})
    assert set(tuning.RATE_GRID) == set(tuning.FAMILIES) and all(len(r) == 3 for r in tuning.RATE_GRID.values())


def test_trials_are_each_family_rate_and_seed_at_the_point_and_never_an_evaluation_seed():
    trials = tuning.rate_trials({"LoRA r8": [3e-3, 5e-3], FULL_FINETUNING: [1e-3]}, [100, 101], SMALL, 4)
    assert [(t["family"], t["value"], t["seed"]) for t in trials] == [
        ("LoRA r8", 3e-3, 100), ("LoRA r8", 3e-3, 101), ("LoRA r8", 5e-3, 100), ("LoRA r8", 5e-3, 101),
        (FULL_FINETUNING, 1e-3, 100), (FULL_FINETUNING, 1e-3, 101)]
    for t in trials:
        spec = t["spec"]
        assert (spec.train.lr, spec.train.seed, spec.data["seed"], spec.train.steps) == (t["value"], t["seed"], t["seed"], 3)
        assert "max_word_length" not in spec.data  # the corpus' default: the specs every notebook shares
    assert tuning.rate_trials({"LoRA r8": [3e-3]}, [100], SMALL, 5)[0]["spec"].data["max_word_length"] == 5
    assert not {t["spec"].data["seed"] for t in trials} & set(EVALUATION_SEEDS)


def test_later_stages_take_the_points_rates_and_their_own_setting():
    point = load_point()
    words = tuning.word_length_trials([4, 5], [100], SMALL, point)
    assert {(t["family"], t["value"], t["spec"].data.get("max_word_length", 4), t["spec"].train.lr) for t in words} == {
        (FULL_FINETUNING, n, n, point["rates"][FULL_FINETUNING]) for n in (4, 5)} | {
        ("LoRA r32", n, n, point["rates"]["ranks"]["32"]) for n in (4, 5)}
    rows = tuning.figure2_trials([64, 32], [100], {**SMALL, "n_components": 1}, point, 4)
    assert {(t["family"], t["spec"].data["n_components"], t["spec"].data["n_train"], t["spec"].train.steps)
            for t in rows} == {(f, 1, n, -(-n // 32)) for f in (FULL_FINETUNING, "LoRA r8") for n in (64, 32)}


def trial(family, value, seed, em, loss=1.0):
    return {"family": family, "value": value, "seed": seed, "exact_match": em, "loss": loss}


def test_the_best_value_is_the_highest_mean_validation_score_and_a_tie_goes_to_the_lower_loss():
    summary = tuning.summarise_trials([trial("LoRA r8", 3e-3, 100, 0.5), trial("LoRA r8", 3e-3, 101, 0.3),
                                       trial("LoRA r8", 5e-3, 100, 0.45), trial("LoRA r8", 5e-3, 101, 0.45),
                                       trial(HYDRA, 3e-3, 100, 0.4, loss=0.9), trial(HYDRA, 5e-3, 100, 0.4, loss=0.8)])
    first = summary[0]
    assert (first["exact_match"], first["seeds"]) == (pytest.approx(0.4), [100, 101])
    assert first["sd"] == pytest.approx(0.1414, abs=1e-4)
    assert tuning.best_values(summary) == {"LoRA r8": 5e-3, HYDRA: 5e-3}


def test_a_best_rate_at_the_grids_edge_gets_one_more_rate_beyond_it_and_an_inner_one_none():
    grid = {"LoRA r8": [3e-3, 5e-3, 7e-3], HYDRA: [3e-3, 5e-3, 7e-3], "LoRA r32": [2e-3, 3e-3, 5e-3]}
    summary = tuning.summarise_trials([trial("LoRA r8", 3e-3, 100, 0.6), trial("LoRA r8", 5e-3, 100, 0.5),
                                       trial(HYDRA, 7e-3, 100, 0.6), trial(HYDRA, 5e-3, 100, 0.5),
                                       trial("LoRA r32", 3e-3, 100, 0.6), trial("LoRA r32", 5e-3, 100, 0.5)])
    assert tuning.beyond_edges(grid, summary) == {"LoRA r8": [2e-3, 3e-3, 5e-3, 7e-3],
                                                  HYDRA: [3e-3, 5e-3, 7e-3, 1e-2]}
    inner = tuning.summarise_trials([trial("LoRA r8", 5e-3, 100, 0.6), trial("LoRA r8", 3e-3, 100, 0.5)])
    assert tuning.beyond_edges(grid, inner) == {}


def test_rates_go_to_ranks_from_the_loras_and_to_a_method_only_where_its_best_differs():
    summary = tuning.summarise_trials(
        [trial(FULL_FINETUNING, 1e-3, 100, 0.5), trial(FULL_FINETUNING, 2e-3, 100, 0.6),
         trial("LoRA r8", 5e-3, 100, 0.5), trial("LoRA r8", 7e-3, 100, 0.4),
         trial(HYDRA, 5e-3, 100, 0.5), trial(HYDRA, 7e-3, 100, 0.55),
         trial(SPLIT, 5e-3, 100, 0.5), trial(SPLIT, 7e-3, 100, 0.45)])
    previous = {FULL_FINETUNING: 1e-3, "ranks": {"8": 3e-3, "32": 3e-3}, "methods": {"Hydra r8 N=3 token router": 4e-3}}
    assert tuning.choose_rates(summary, previous) == {
        FULL_FINETUNING: 2e-3, "ranks": {"8": 5e-3, "32": 3e-3},  # rank 32: not in the grid, kept
        "methods": {"Hydra r8 N=3 token router": 4e-3, HYDRA: 7e-3}}  # Split 4x8: its rank's rate, no entry


def test_the_word_length_is_the_longest_meeting_the_targets_and_rows_the_most_below_the_ceiling():
    words = tuning.summarise_trials([trial(FULL_FINETUNING, 4, 100, 0.6), trial("LoRA r32", 4, 100, 0.5),
                                     trial(FULL_FINETUNING, 5, 100, 0.55), trial("LoRA r32", 5, 100, 0.35),
                                     trial(FULL_FINETUNING, 6, 100, 0.45), trial("LoRA r32", 6, 100, 0.31)])
    assert tuning.choose_word_length(words) == 5
    assert tuning.choose_word_length(words, {FULL_FINETUNING: 0.9}) == 4  # none meets: the shortest
    rows = tuning.summarise_trials([trial(FULL_FINETUNING, 600, 100, 0.95), trial(FULL_FINETUNING, 300, 100, 0.85),
                                    trial(FULL_FINETUNING, 150, 100, 0.6), trial("LoRA r8", 600, 100, 0.2)])
    assert tuning.choose_rows(rows) == 300
    assert tuning.choose_rows(rows, ceiling=0.5) == 150
    with pytest.raises(ValueError, match="full fine-tuning"):
        tuning.choose_rows(tuning.summarise_trials([trial("LoRA r8", 600, 100, 0.2)]))


def test_the_decision_table_marks_the_chosen_value_and_a_choice_at_the_grids_edge():
    summary = tuning.summarise_trials([trial("LoRA r8", lr, 100, em) for lr, em in ((3e-3, .2), (5e-3, .3), (7e-3, .4))]
                                      + [trial(HYDRA, lr, 100, em) for lr, em in ((3e-3, .2), (5e-3, .5), (7e-3, .4))])
    lines = tuning.decision_table(summary, tuning.best_values(summary), "lr").splitlines()
    assert len(lines) == 8 and lines[0].startswith("| family | lr |")
    assert lines[4] == "| LoRA r8 | 0.007 | 0.400 ± 0.000 | 1 | 1.000 | **yes**, at the grid's edge |"
    assert lines[6].endswith("| **yes** |") and lines[2].endswith("|  |")  # Hydra's 5e-3: inside the grid


def test_validation_rows_are_counted_against_the_evaluation_seeds_rows():
    same = tuning.held_out_overlap([3], [3], n_components=2, n_train=40, n_test=10)
    assert same == {"validation_rows": 10, "in_evaluation_test": 10, "in_evaluation_train": 0}
    other = tuning.held_out_overlap([100, 101], [0, 1], n_components=2, n_train=40, n_test=10)
    assert other["validation_rows"] == 20 and other["in_evaluation_test"] < 20


def test_the_doc_section_replaces_only_the_text_between_its_markers(tmp_path):
    doc = tmp_path / "op.md"
    doc.write_text("# Page\n\nbefore\n")
    tuning.write_doc_section(doc, "first table")
    tuning.write_doc_section(doc, "second table")
    text = doc.read_text()
    assert text.startswith("# Page\n\nbefore\n") and "second table" in text and "first table" not in text
    doc.write_text(text + "\nafter\n")
    tuning.write_doc_section(doc, "third")
    assert doc.read_text().endswith("third\n" + tuning.DOC_END + "\n\nafter\n")


def test_the_expected_cost_counts_distinct_runs_not_in_the_store_at_the_suites_step_cost(tmp_path):
    trials = tuning.rate_trials({"LoRA r8": [3e-3, 5e-3]}, [100, 101], SMALL, 4)
    cost = tuning.expected_cost(trials + trials[:1], RunStore(tmp_path), processes=2)
    step, per_run = tuning.STEP_COSTS["tiny", "cpu"]
    assert (cost["runs"], cost["in_store"]) == (4, 0)
    assert cost["seconds"] == pytest.approx(4 * (3 * step + per_run) / 2)
    assert "4 runs, 0 already in the store" in cost["line"]
