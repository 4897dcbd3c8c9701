"""notebook: the one-call set-up every notebook starts with, and the per-seed readers of results."""
import matplotlib.pyplot as plt
import pytest

from hydralib.notebook import method_claim, nmis, scores, setup
from hydralib.store import RunStore

RESULTS = {"LoRA r8": [{"exact_match": 0.25, "routing": {"nmi": 0.1}}, {"exact_match": 0.5, "routing": {"nmi": 0.3}}],
           "full fine-tuning": [{"exact_match": 0.75}, {"exact_match": 1.0}]}


def test_setup_makes_the_figures_folder_opens_the_store_and_says_where(tmp_path, capsys):
    figures, store = setup(tmp_path / "lab" / "figures", tmp_path / "store")
    assert figures.is_dir() and isinstance(store, RunStore) and store.root == tmp_path / "store"
    out = capsys.readouterr().out
    assert str((tmp_path / "lab" / "figures").resolve()) in out and str((tmp_path / "store").resolve()) in out
    assert plt.rcParams["savefig.bbox"] == "tight"
    assert setup(tmp_path / "f2")[1] is None


def test_scores_and_nmis_read_one_value_per_seed_in_order():
    assert scores(RESULTS, "LoRA r8") == [0.25, 0.5]
    assert nmis(RESULTS, "LoRA r8", "nmi") == [0.1, 0.3]
    with pytest.raises(KeyError, match="there are: LoRA r8, full fine-tuning"):
        scores(RESULTS, "LoRA r16")
    with pytest.raises(ValueError, match="no routing summary"):
        nmis(RESULTS, "full fine-tuning")


def test_method_claim_pairs_the_scores_and_carries_sizes_and_test_rows():
    results = {"a": [{"exact_match": 0.5, "parameters": {"trainable": 10, "paper": 8.0}}],
               "b": [{"exact_match": 0.25, "parameters": {"trainable": 20, "paper": 16.0}}]}
    text, better, worse, paper, options = method_claim("a beats b", results, "a", "b", "Table 2", 500)
    assert (text, better, worse, paper) == ("a beats b", [0.5], [0.25], "Table 2")
    assert options == {"sizes": (results["a"][0]["parameters"], results["b"][0]["parameters"]), "test_rows": 500}
    # a derived score, and a profile that decides it: a method that did not run keeps the row, without values
    _, better, worse, _, options = method_claim("b above a", results, "b", "a", "-", decided_by="gpu",
                                                value=lambda run: 1 - run["exact_match"])
    assert (better, worse, options["decided_by"]) == ([0.75], [0.5], "gpu") and "sizes" in options
    assert method_claim("c beats a", results, "c", "a", "-", decided_by="gpu") == ("c beats a", [], [], "-",
                                                                                  {"decided_by": "gpu"})
    with pytest.raises(KeyError, match="no results for 'c'"):
        method_claim("c beats a", results, "c", "a", "-")


def test_method_claim_names_its_comparison_so_the_table_shows_a_repeated_one_once(tmp_path):
    import json

    from hydralib.claims import adjust_verdicts, record_verdicts
    results = {"a": [{"exact_match": v, "parameters": {"trainable": 10}} for v in (0.5, 0.6, 0.7)],
               "b": [{"exact_match": v, "parameters": {"trainable": 20}} for v in (0.2, 0.4, 0.3)],
               "a2": [{"exact_match": v, "parameters": {"trainable": 10}} for v in (0.6, 0.6, 0.6)]}
    assert method_claim("a beats b", results, "a", "b", "-", comparison=True)[4]["comparison"] == "a vs b"
    assert method_claim("a beats b", results, "a2", "b", "-", comparison="a vs b")[4]["comparison"] == "a vs b"
    assert "comparison" not in method_claim("a beats b", results, "a", "b", "-")[4]
    assert method_claim("c beats a", results, "c", "a", "-", decided_by="gpu", comparison=True)[4] == {
        "decided_by": "gpu", "comparison": "c vs a"}
    for bad in ("", 3):
        with pytest.raises(ValueError, match=f"comparison must be True .*got {bad!r}"):
            method_claim("a beats b", results, "a", "b", "-", comparison=bad)
    # two notebooks make one comparison on other values (other labels, other runs): named, it is one row
    for folder, name in ((tmp_path / "named", "a vs b"), (tmp_path / "unnamed", None)):
        record_verdicts(folder, "03_x", [method_claim("a beats b", results, "a", "b", "-", comparison=bool(name))])
        record_verdicts(folder, "04_y", [method_claim("a2 beats b", results, "a2", "b", "-", comparison=name)])
    rows = {folder: [(r["notebook"], r["also_in"]) for r in
                     adjust_verdicts(json.loads((tmp_path / folder / "verdicts.json").read_text()))]
            for folder in ("named", "unnamed")}
    assert rows == {"named": [("03_x", ["04_y"])], "unnamed": [("03_x", []), ("04_y", [])]}


def test_nmis_reads_the_per_layer_nmi_by_default_and_names_the_statistics_there_are():
    runs = [{"routing": {"nmi": 0.2, "nmi_layer_mean": 0.5, "top_gate_mean": 0.3}} for _ in range(2)]
    assert nmis({"h": runs}, "h") == [0.5, 0.5] and nmis({"h": runs}, "h", "top_gate_mean") == [0.3, 0.3]
    with pytest.raises(KeyError, match="no routing statistic 'entropy'; there are: nmi, nmi_layer_mean"):
        nmis({"h": runs}, "h", "entropy")


def test_setup_sets_torchs_threads_and_says_so(tmp_path, capsys):
    import torch
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        setup(tmp_path / "f")  # the default: one thread (the best measured on a busy 2-core machine)
        assert torch.get_num_threads() == 1 and "torch threads: 1" in capsys.readouterr().out
        torch.set_num_threads(2)
        setup(tmp_path / "f", threads=0)
        assert torch.get_num_threads() == 2 and "torch threads: 2 (left as they were)" in capsys.readouterr().out
        for bad in (-1, 1.5, "2", True):
            with pytest.raises(ValueError, match=f"threads must be a whole number >= 0.*got {bad!r}"):
                setup(tmp_path / "f", threads=bad)
    finally:
        torch.set_num_threads(before)


def test_every_notebook_names_the_projects_kernel():
    import json

    from hydralib.suite import list_notebooks
    kernels = {nb.name: json.loads(nb.read_text())["metadata"]["kernelspec"] for nb in list_notebooks()}
    assert kernels and all(k["name"] == "hydralib" and k["display_name"] == "HydraLoRA Lab"
                           for k in kernels.values()), kernels


def test_plain_verdicts_say_each_verdict_as_the_claims_table_judges_it(tmp_path, capsys):
    from hydralib.claims import record_verdicts
    from hydralib.notebook import plain_verdicts
    assert plain_verdicts(tmp_path, "05_x") == []
    assert "No verdict of 05_x is recorded" in capsys.readouterr().out
    results = {name: [{"exact_match": v, "parameters": {"trainable": 10}} for v in values] for name, values in {
        "strong": (0.5, 0.6, 0.7, 0.6, 0.65), "weak": (0.1, 0.15, 0.2, 0.1, 0.12),
        "edge": (0.2, 0.25, 0.3, 0.2, 0.3), "below": (0.1, 0.2, 0.15, 0.2, 0.1),
        "same": (0.3, 0.2, 0.4, 0.3, 0.3), "other": (0.31, 0.25, 0.35, 0.3, 0.28)}.items()}
    record_verdicts(tmp_path, "03_first", [method_claim("strong beats weak", results, "strong", "weak", "-",
                                                        comparison=True)])
    entries = record_verdicts(tmp_path, "05_x", [
        method_claim("edge beats below", results, "edge", "below", "-", test_rows=40),  # p 0.047 alone
        method_claim("same beats other", results, "same", "other", "-"),
        method_claim("strong again beats weak", results, "strong", "weak", "-", comparison=True),
        method_claim("gpu only beats weak", results, "gpu only", "weak", "-", decided_by="gpu")])
    capsys.readouterr()
    said = plain_verdicts(tmp_path, "05_x", entries)
    assert said[0].startswith("inconclusive: edge beats below: 0.250 against 0.150, higher by 0.100 (95% interval "
                              "+0.002 to +0.198), over 5 seeds and 40 test rows. Its own interval says held; the "
                              "claims table, which adjusts the p-values of all its rows, says inconclusive (q = 0.071)")
    assert said[1].startswith("inconclusive: same beats other: 0.300 against 0.298, higher by 0.002")
    assert "which holds zero), over 5 seeds." in said[1] and "Its own interval" not in said[1]
    assert said[2].startswith("held: strong again beats weak: 0.610 against 0.134, higher by 0.476")
    assert said[2].endswith("The claims table shows this comparison once, under 03_first.")
    assert said[3] == "not run here: gpu only beats weak; it needs `make suite PROFILE=gpu`."
    out = capsys.readouterr().out
    assert "From the last run" not in out and out.count("\n- ") + out.startswith("- ") == 4
    # without entries: the last ones recorded for the notebook, said to be from the last run
    assert plain_verdicts(tmp_path, "05_x") == said
    assert capsys.readouterr().out.startswith("From the last run (")
    with pytest.raises(ValueError, match=r"verdicts not recorded in .*verdicts.json: \['elsewhere'\]"):
        plain_verdicts(tmp_path, "05_x", [{**entries[0], "claim": "elsewhere"}])


def test_zero_gradients_every_b_at_zero_stops_a_and_the_router_and_a_zero_router_never_moves():
    from hydralib.notebook import zero_gradients
    for seed in (0, 1):
        assert zero_gradients("kaiming", 0, seed) == {"A", "router"}  # every B at zero: only B learns at step 0
        assert zero_gradients("zeros", 0, seed) == {"A", "router"}
        assert zero_gradients("kaiming", 3, seed) == set()           # B moved: everything learns
        assert zero_gradients("zeros", 3, seed) == {"router"}        # equal heads: the uniform gate stays
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"steps must be a whole number >= 0, got {bad!r}"):
            zero_gradients("kaiming", bad)


def test_uniform_gate_gap_is_rounding_under_plain_adam():
    from hydralib.notebook import uniform_gate_gap
    assert uniform_gate_gap() < 1e-5 and uniform_gate_gap(20, seed=1) < 1e-5
    with pytest.raises(ValueError, match="steps must be a whole number >= 1, got 0"):
        uniform_gate_gap(0)


def test_permuting_one_layers_heads_moves_the_layer_averaged_nmi_and_no_per_layer_nmi():
    import numpy as np

    from hydralib.notebook import permutation_nmis, permute_heads, strongest_renumbering
    gates = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    moved = permute_heads(gates, 1, [2, 0, 3, 1])
    assert moved[:, 1].tolist() == [[6, 4, 7, 5], [18, 16, 19, 17]]
    assert np.array_equal(moved[:, [0, 2]], gates[:, [0, 2]]) and gates[0, 1, 0] == 4  # the input is left as it was
    for layer, permutation, message in ((3, [0, 1, 2, 3], "layer must lie in 0..2"),
                                        (0, [0, 1, 1, 3], "permutation must order the heads 0..3 anew")):
        with pytest.raises(ValueError, match=message):
            permute_heads(gates, layer, permutation)
    # two components, two heads, two layers that both separate them, under opposite head numbers; in some rows one
    # layer routes more sharply, in the others the other: averaged over layers, the heads say nothing
    components = np.array([0, 0, 1, 1])
    routed = np.array([[[0.9, 0.1], [0.4, 0.6]], [[0.6, 0.4], [0.1, 0.9]],
                       [[0.1, 0.9], [0.6, 0.4]], [[0.4, 0.6], [0.9, 0.1]]])
    nmis = permutation_nmis(routed, components, 1, [1, 0])  # layer 1 numbered as layer 0: the average agrees
    assert nmis["layer-averaged"] == pytest.approx((0.0, 1.0))
    assert nmis["per-layer"] == (pytest.approx([1.0, 1.0]), pytest.approx([1.0, 1.0]))
    # the renumbering that moves the layer-averaged NMI most: here the only one that moves it
    assert strongest_renumbering(routed, components) == (0, [1, 0])
    # on random gates: no other layer and cyclic shift moves the layer-averaged NMI more
    gates = np.random.default_rng(3).dirichlet(np.ones(3), size=(12, 4))
    labels = np.random.default_rng(4).integers(0, 3, 12)
    layer, permutation = strongest_renumbering(gates, labels)

    def moved(layer, permutation):
        before, after = permutation_nmis(gates, labels, layer, permutation)["layer-averaged"]
        return abs(after - before)

    assert moved(layer, permutation) > 0 and permutation in ([1, 2, 0], [2, 0, 1])
    assert all(moved(other, shift) <= moved(layer, permutation)
               for other in range(4) for shift in ([1, 2, 0], [2, 0, 1]))
