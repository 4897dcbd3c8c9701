"""AdapterConfig: every method and ablation is a setting of one record, and a bad setting is named."""
import math
import time

import pytest

from hydralib.config import AdapterConfig


def test_defaults_per_method_and_derived_values():
    assert AdapterConfig(method="lora").heads == 1 and AdapterConfig(method="hydra").heads == 4
    split = AdapterConfig(method="split", r=8, alpha=16, heads=4)
    assert split.num_a == 4 and split.scaling == 2.0
    assert AdapterConfig(method="hydra", r=8, heads=4).num_a == 1  # one shared A
    assert AdapterConfig(targets=("q_proj", "v_proj")).targets == ["q_proj", "v_proj"]


def test_round_trip_through_a_dict():
    config = AdapterConfig(method="hydra", r=4, alpha=8, heads=3, gate="learned", top_k=2, router_level="sequence")
    assert AdapterConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown AdapterConfig fields \['rank'\]"):
        AdapterConfig.from_dict({"rank": 8})


@pytest.mark.parametrize("settings, message", [
    (dict(method="moe"), "method must be one of lora, split, hydra, got method='moe'"),
    (dict(gate="softmax"), "gate must be one of learned, uniform, task, cluster, got gate='softmax'"),
    (dict(r=0), "r must be an integer >= 1, got r=0"),
    (dict(r=True), "r must be an integer >= 1, got r=True"),
    (dict(r=2.5), "r must be an integer >= 1, got r=2.5"),
    (dict(heads=0), "heads must be an integer >= 1"),
    (dict(method="lora", heads=2), "method='lora' has exactly one head"),
    (dict(alpha=math.nan), "alpha must be a finite number > 0, got alpha=nan"),
    (dict(alpha=-1), "alpha must be a finite number > 0"),
    (dict(top_k=5, heads=4), r"top_k must be an integer in 1..heads=4"),
    (dict(top_k=1, gate="uniform"), r"top_k applies to a learned gate \(learned\) only"),
    (dict(router_init="zeros", gate="task"), "router_init='zeros' applies to a learned gate only"),
    (dict(router_level="sequence", gate="cluster"), "router_level='sequence' applies to a learned gate only"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    (dict(targets=[]), "targets must be a non-empty list"),
    (dict(implementation="cuda"), "implementation must be one of fused, loop, got implementation='cuda'"),
])
def test_a_bad_setting_names_the_value_and_what_is_allowed(settings, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**settings)


@pytest.mark.parametrize("targets, message", [
    ("(.*.*)*Z", "repeats a group that holds a quantifier"),
    ("(a|aa)*Z", r"repeats an alternation"),
    ("(", r"targets pattern '\(' is not a valid regular expression: missing \)"),
    (".*.*.*.*Z", "has 4 open-ended quantifiers"),
    (r"(a)\1", "uses a backreference"),
    ("(?=a).*", "uses a lookahead"),
    ("q" * 201, "is 201 characters long; at most 200"),
    (["q_proj", "(.*)"], r"targets entry '\(\.\*\)' is not a module-name suffix"),
    (["x"] * 10_001, "lists 10001 module names; at most 10000"),
])
def test_hostile_targets_are_refused_when_the_config_is_made(targets, message):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        AdapterConfig(targets=targets)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("targets", [r".*\.(q|v)_proj", r".*layers\.\d+\.self_attn\.[qkv]_proj", "q_proj",
                                     ["self_attn.q_proj", "v_proj", "model.layers.0.mlp.down_proj"], "all-linear"])
def test_ordinary_targets_are_kept(targets):
    assert AdapterConfig(targets=targets).targets == targets
