"""build_data: a run's rows from its data spec, with selections for per-task and IID-part LoRAs."""
import pytest

from hydralib.data.corpus import build_data


def test_data_selections_give_one_component_or_one_iid_part():
    base = {"kind": "synthetic", "n_components": 3, "conflict": 1.0, "n_train": 90, "n_test": 30, "seed": 0}
    one = build_data({**base, "only_component": 2})
    assert {r["component"] for r in one["train"] + one["test"]} == {2} and len(one["train"]) == 30
    parts = [build_data({**base, "part": i, "parts": 3})["train"] for i in range(3)]
    whole = build_data(base)["train"]
    assert sorted(map(str, sum(parts, []))) == sorted(map(str, whole)) and all(len(p) == 30 for p in parts)
    assert len({r["component"] for r in parts[0]}) == 3  # a random third mixes every component
    with pytest.raises(ValueError, match="only_component=3; allowed: 0..2"):
        build_data({**base, "only_component": 3})
    with pytest.raises(ValueError, match="part=3, parts=3"):
        build_data({**base, "part": 3, "parts": 3})


def test_an_unknown_kind_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown data kind 'imagenet'; allowed: synthetic, primitives, real"):
        build_data({"kind": "imagenet"})


def test_identifiability_and_cluster_text_pass_through_and_a_spec_without_them_builds_as_before():
    from hydralib.data import make_corpus
    base = {"kind": "synthetic", "n_components": 4, "conflict": 0.0, "n_train": 80, "n_test": 16, "seed": 1}
    assert build_data(base) == make_corpus(n_components=4, conflict=0.0, n_train=80, n_test=16, seed=1)
    half = build_data({**base, "identifiability": 0.5, "cluster_text": "instruction"})
    assert half == make_corpus(n_components=4, conflict=0.0, n_train=80, n_test=16, seed=1, identifiability=0.5)
    assert half != build_data(base)
    with pytest.raises(ValueError, match="cluster_text 'input'; allowed: prompt, instruction"):
        build_data({**base, "cluster_text": "input"})
