"""methods: each label and its configuration written once, at equal scale (alpha = 2r)."""
import pytest

from hydralib.config import AdapterConfig
from hydralib.methods import (FULL_FINETUNING, adapter_config, figure5_methods, full_finetuning, hydra,
                              implementation_sweep, label, lane_methods, lane_roles, lora, split, with_lr,
                              with_data, clustering_on)


def test_labels_and_configurations_at_equal_scale():
    methods = {**full_finetuning(), **lora(8, 32), **split(4, 8), **split(4, 8, gate="task"),
               **hydra(8, 8), **hydra(8, 8, router_level="sequence"), **hydra(8, 8, gate="cluster"),
               **hydra(8, 8, gate="uniform"), **hydra(8, 8, top_k=2)}
    assert list(methods) == ["full fine-tuning", "LoRA r8", "LoRA r32", "Split 4x8 learned", "Split 4x8 oracle",
                             "Hydra r8 N=8 token router", "Hydra r8 N=8 sequence router", "Hydra r8 N=8 cluster gate",
                             "Hydra r8 N=8 uniform gate", "Hydra r8 N=8 token router top-2"]
    assert methods[FULL_FINETUNING] is None
    assert methods["LoRA r32"].alpha == 64.0 and methods["LoRA r32"].scaling == 2.0  # alpha = 2r
    assert methods["Split 4x8 oracle"] == AdapterConfig(method="split", r=8, alpha=16.0, heads=4, gate="task")
    assert all(label(c) == name for name, c in methods.items())


def test_alpha_can_be_the_papers_fixed_32():
    assert adapter_config("lora", 8, alpha=32).scaling == 4.0


def test_a_bad_setting_is_refused_with_its_name():
    with pytest.raises(ValueError, match="gate must be one of .*got gate='oracle'"):
        hydra(8, 4, gate="oracle")


def test_with_lr_gives_full_finetuning_its_own_rate():
    methods = with_lr({**full_finetuning(), **lora(8)}, 3e-3, 1e-3, balance_weight=0.0)
    assert methods["full fine-tuning"] == {"adapter": None, "lr": 1e-3, "balance_weight": 0.0}
    assert methods["LoRA r8"]["lr"] == 3e-3
    with pytest.raises(ValueError, match="give full_lr"):
        with_lr(full_finetuning(), 3e-3)


def test_with_lr_takes_a_rate_per_rank_and_names_a_missing_rank():
    methods = with_lr({**lora(8, 32), **split(4, 8), **hydra(8, 3)}, {8: 5e-3, 32: 3e-3})
    assert {name: m["lr"] for name, m in methods.items()} == {
        "LoRA r8": 5e-3, "LoRA r32": 3e-3, "Split 4x8 learned": 5e-3, "Hydra r8 N=3 token router": 5e-3}
    with pytest.raises(ValueError, match=r"'LoRA r16' has rank 16.*ranks \[8, 32\]"):
        with_lr(lora(16), {8: 5e-3, 32: 3e-3})
    # papermill injects a dict parameter with its keys as text
    assert with_lr(lora(8, 32), {"8": 5e-3, "32": 3e-3})["LoRA r8"]["lr"] == 5e-3
    with pytest.raises(ValueError, match=r"keys are ranks.*\['r8'\]"):
        with_lr(lora(8), {"r8": 5e-3})


def test_named_sets_of_the_notebooks():
    assert list(figure5_methods(8, 3)) == ["frozen", "LoRA r8", "LoRA r16", "LoRA r32", "Split 4x8 learned",
                                           "Hydra r8 N=3 token router"]
    sweep = implementation_sweep(8, [2, 4])
    assert list(sweep) == ["fused N=2", "fused N=4", "loop N=2", "loop N=4"]
    assert sweep["loop N=4"].implementation == "loop" and sweep["loop N=4"].heads == 4
    with pytest.raises(ValueError, match=r"\[0\]"):
        implementation_sweep(8, [0])
    lane = lane_methods(8, 3, targets=["q_proj"])
    assert list(lane) == ["LoRA r8", "Split 3x8 learned", "Hydra r8 N=3 token router", "Hydra r8 N=3 cluster gate"]
    assert all(c.targets == ["q_proj"] for c in lane.values())
    assert list(lane_methods(8, 3, wide_rank=32))[4:] == ["LoRA r32"]
    with pytest.raises(ValueError, match="wide_rank must be 0 \\(none\\) or larger than r=8, got wide_rank=8"):
        lane_methods(8, 3, wide_rank=8)


def test_lane_roles_name_each_method_by_its_role_not_its_place():
    roles = lane_roles(8, 3, wide_rank=32)
    assert roles == {"lora": "LoRA r8", "split": "Split 3x8 learned", "token": "Hydra r8 N=3 token router",
                     "cluster": "Hydra r8 N=3 cluster gate", "wide": "LoRA r32"}
    assert set(lane_methods(8, 3)) == {roles[k] for k in ("lora", "split", "token", "cluster")}
    chosen = lane_methods(8, 3, wide_rank=32, roles=["token", "lora"])  # the roles a profile trains, LoRA r32 too
    assert set(chosen) == {roles["lora"], roles["token"], roles["wide"]}
    with pytest.raises(ValueError, match="role must be one of lora, split, token, cluster, got role='hydra'"):
        lane_methods(8, 3, roles=["hydra"])


def test_with_data_merges_data_keys_and_leaves_defaults_out_so_runs_are_shared():
    from hydralib.specs import method_specs
    methods = with_lr({**lora(8), **hydra(8, 2, gate="cluster")}, 5e-3)
    assert with_data(methods, identifiability=1.0) == methods  # the default: the very runs that never name it
    harder = with_data(methods, identifiability=0.5)
    assert harder["LoRA r8"] == {**methods["LoRA r8"], "data_options": {"identifiability": 0.5}}
    both = with_data(clustering_on({k: v for k, v in harder.items() if "cluster" in k}, "instruction"), conflict=0.5)
    [name] = both
    assert both[name]["data_options"] == {"identifiability": 0.5, "cluster_text": "instruction", "conflict": 0.5}
    options = dict(n_components=2, steps=1, pretrain_steps=1, n_train=4, n_test=2)
    [spec] = method_specs(both, [0], **options, data_options={"max_word_length": 3})[name]
    assert spec.data["identifiability"] == 0.5 and spec.data["cluster_text"] == "instruction"
    assert spec.data["max_word_length"] == 3  # the common data keys stay beside the method's own
    [plain] = method_specs(methods, [0], **options)["LoRA r8"]
    assert plain.key == method_specs(with_data(methods, identifiability=1.0), [0], **options)["LoRA r8"][0].key
    assert plain.key != method_specs(harder, [0], **options)["LoRA r8"][0].key


def test_clustering_on_labels_the_clustered_text_and_refuses_what_clusters_nothing():
    clustered = with_lr(hydra(8, 8, gate="cluster"), 5e-3)
    on_prompt, on_instruction = clustering_on(clustered, "prompt"), clustering_on(clustered, "instruction")
    assert list(on_prompt) == ["Hydra r8 N=8 cluster gate (whole prompt)"]
    assert list(on_instruction) == ["Hydra r8 N=8 cluster gate (instruction)"]
    assert "data_options" not in on_prompt["Hydra r8 N=8 cluster gate (whole prompt)"]  # the default: 03's runs
    assert on_instruction["Hydra r8 N=8 cluster gate (instruction)"]["data_options"] == {"cluster_text": "instruction"}
    with pytest.raises(ValueError, match=r"\['Hydra r8 N=8 token router'\] cluster nothing"):
        clustering_on(with_lr(hydra(8, 8), 5e-3), "prompt")
    with pytest.raises(ValueError, match="unknown cluster text 'input'; allowed: prompt, instruction"):
        clustering_on(clustered, "input")


def test_settings_beyond_the_defaults_are_said_in_the_label():
    from hydralib.methods import setting_label
    assert label(adapter_config("hydra", 8, heads=8, router_input="Ax")) == "Hydra r8 N=8 token router, router on Ax"
    rlora = adapter_config("hydra", 8, heads=8, dropout=0.05, head_dropout=True, b_init_std=1e-3)
    assert label(rlora) == "Hydra r8 N=8 token router, dropout 0.05 per head, random B (std 0.001)"
    assert label(adapter_config("hydra", 8, heads=4, dropout=0.05, implementation="loop")) == \
        "Hydra r8 N=4 token router, dropout 0.05, loop"
    assert label(adapter_config("lora", 8, freeze_a=True)) == "LoRA r8, frozen A"
    assert label(adapter_config("hydra", 8, heads=8, router_init="zeros")) == "Hydra r8 N=8 token router (zeros init)"
    assert setting_label(adapter_config("split", 8, heads=4)) == ""
    assert len({label(adapter_config("hydra", 8, heads=8, dropout=d)) for d in (0.0, 0.05, 0.1)}) == 3


def test_balance_loss_is_a_training_option_named_in_the_label():
    from hydralib.methods import with_balance_loss
    methods = with_balance_loss(with_lr(hydra(8, 4), 5e-3), 0.1)
    assert methods == {"Hydra r8 N=4 token router, balance loss 0.1":
                       {"adapter": hydra(8, 4)["Hydra r8 N=4 token router"], "lr": 5e-3, "balance_weight": 0.1}}
    with pytest.raises(ValueError, match="balance loss weight must be a number > 0, got 0"):
        with_balance_loss(with_lr(hydra(8, 4), 5e-3), 0)


def test_figure6_roles_name_our_method_for_each_of_the_papers_ablations():
    from hydralib import paper
    from hydralib.methods import figure6_roles
    roles = figure6_roles(8, 8)
    assert set(roles) == set(paper.FIGURE6)
    assert roles == {"HydraLoRA": "Hydra r8 N=8 token router", "w/o MoE (= LoRA r8)": "LoRA r8",
                     "w/o Hydra (Split)": "Split 8x8 learned", "w/o gate (uniform)": "Hydra r8 N=8 uniform gate"}


def test_the_split_rank_that_matches_hydras_weights():
    from hydralib.methods import split_rank_matching_hydra
    # square layers: Hydra r8 N=2 holds 8 (d + 2d) = 24d, Split 2 x r' holds 4 r' d: r' = 6 exactly
    assert split_rank_matching_hydra(8, 2, [(16, 16)]) == 6
    # Hydra r8 N=8 on 16 -> 16 and 16 -> 64: 8 (16 + 128) + 8 (16 + 512) = 5376; Split 8 x r': (8 * 32 + 8 * 80) r'
    assert split_rank_matching_hydra(8, 8, [(16, 16), (16, 64)]) == 6
    assert split_rank_matching_hydra(8, 8, [(192, 192)]) == 4  # 72 / 16 = 4.5, rounded to even
    with pytest.raises(ValueError, match="layer_shapes must be a non-empty list"):
        split_rank_matching_hydra(8, 2, [])


def test_with_rate_of_rank_gives_an_untuned_rank_a_tuned_ranks_rate():
    from hydralib.methods import with_rate_of_rank
    methods = with_rate_of_rank({**split(8, 5), **split(8, 5, gate="task")}, {"8": 5e-3, "32": 3e-3}, 8)
    assert {name: m["lr"] for name, m in methods.items()} == {"Split 8x5 learned": 5e-3, "Split 8x5 oracle": 5e-3}
    with pytest.raises(ValueError, match=r"'rank 16' has rank 16"):
        with_rate_of_rank(split(8, 5), {8: 5e-3}, 16)
