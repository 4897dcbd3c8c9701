"""Adapter files: all-or-nothing loading and merging, checksums and format versions, malformed files, atomic
saving, merge_and_unload, and PEFT export / import checked against PEFT itself."""
import copy
import hashlib
import json
import math
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from hydralib import (AdapterConfig, AdapterFileError, add_adapters, adapter_layers, export_peft, import_peft,
                      load_adapters, merge_adapters, merge_and_unload, routing, save_adapters, unmerge_adapters)
from hydralib import adapter_files
from hydralib.adapter_files import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, record_checksum
from hydralib.layers import AdapterLayer
from conftest import randomize_b, small_gpt2, small_llama

HYDRA = AdapterConfig(method="hydra", r=4, heads=3, targets=["q_proj", "v_proj", "down_proj"])


def snapshot(model):
    """Everything a failed load or merge must leave as it was."""
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(n, type(m).__name__) for n, m in model.named_modules()],
            {n: p.requires_grad for n, p in model.named_parameters()})


def assert_unchanged(model, before):
    state, modules, flags = snapshot(model)
    assert modules == before[1]
    assert flags == before[2]
    assert state.keys() == before[0].keys()
    for k, v in state.items():
        assert torch.equal(v, before[0][k]), f"{k} changed"


@pytest.fixture
def saved(tmp_path):
    model = randomize_b(add_adapters(small_llama(), HYDRA, seed=0))
    folder = save_adapters(model, tmp_path / "adapter")
    return model, folder


# --- the file format ------------------------------------------------------------------------------
def test_saved_config_records_version_checksum_and_dtypes_and_no_temporary_files_remain(saved, tokens):
    model, folder = saved
    record = json.loads((folder / CONFIG_NAME).read_text())
    assert record["format_version"] == FORMAT_VERSION == 3
    assert record["config_sha256"] == record_checksum(record)
    assert record["weights_sha256"] == hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    assert set(record["tensor_dtypes"].values()) == {"float32"}
    assert len(record["tensor_shapes"]) == 2 * 3 * 3  # 2 blocks x 3 targets x (A, B, router)
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]
    restored = load_adapters(small_llama(), folder)
    torch.testing.assert_close(restored(tokens).logits, model(tokens).logits, rtol=0, atol=0)


def test_a_format_version_1_file_without_checksum_still_loads(saved, tokens):
    model, folder = saved
    record = json.loads((folder / CONFIG_NAME).read_text())
    for key in ("weights_sha256", "tensor_dtypes", "weights_file", "config_sha256"):
        del record[key]
    record["format_version"] = 1
    (folder / CONFIG_NAME).write_text(json.dumps(record))
    torch.testing.assert_close(load_adapters(small_llama(), folder)(tokens).logits, model(tokens).logits,
                               rtol=0, atol=0)


def _edit_config(change, resum=True):
    """Edit the config; resum=True records the new config checksum, so the checks behind it are reached."""
    def fault(folder):
        record = json.loads((folder / CONFIG_NAME).read_text())
        change(record)
        if resum:
            record["config_sha256"] = record_checksum(record)
        (folder / CONFIG_NAME).write_text(json.dumps(record))
    return fault


def _edit_weights(change):
    """Rewrite the weights and record the new checksum, so the checks behind the checksum are reached."""
    def fault(folder):
        tensors = load_file(str(folder / WEIGHTS_NAME))
        change(tensors)
        save_file(tensors, str(folder / WEIGHTS_NAME))
        _resum(folder)
    return fault


def _resum(folder):
    record = json.loads((folder / CONFIG_NAME).read_text())
    record["weights_sha256"] = hashlib.sha256((folder / WEIGHTS_NAME).read_bytes()).hexdigest()
    record["config_sha256"] = record_checksum(record)
    (folder / CONFIG_NAME).write_text(json.dumps(record))


def _truncate(name, keep=0.5, resum=False):
    def fault(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(len(data) * keep)])
        if resum:
            _resum(folder)
    return fault


def _flip_bytes(folder):
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    for i in (-4, -100, -1000):  # inside the tensor data, past the header
        data[i] ^= 0x5A
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))


def _first(tensors, suffix):
    return next(k for k in sorted(tensors) if k.endswith(suffix))


FAULTS = {
    "truncated weights": (_truncate(WEIGHTS_NAME), WEIGHTS_NAME, "does not match the checksum"),
    "truncated weights, checksum updated": (_truncate(WEIGHTS_NAME, resum=True), WEIGHTS_NAME,
                                            "not a readable safetensors file"),
    "flipped bytes in weights": (_flip_bytes, WEIGHTS_NAME, "does not match the checksum"),
    "empty weights file": (lambda f: (f / WEIGHTS_NAME).write_bytes(b""), WEIGHTS_NAME, "does not match the checksum"),
    "truncated config": (_truncate(CONFIG_NAME), CONFIG_NAME, "is not valid JSON"),
    "config not UTF-8": (lambda f: (f / CONFIG_NAME).write_bytes(b"\xff\xfe{}"), CONFIG_NAME, "not UTF-8"),
    "config a JSON list": (lambda f: (f / CONFIG_NAME).write_text("[1, 2]"), CONFIG_NAME, "JSON list"),
    "no format version": (_edit_config(lambda r: r.pop("format_version")), CONFIG_NAME, "no 'format_version'"),
    "newer format version": (_edit_config(lambda r: r.update(format_version=99)), CONFIG_NAME,
                             "format version 99.*newer hydralib"),
    "format version a string": (_edit_config(lambda r: r.update(format_version="2")), CONFIG_NAME,
                                "'format_version' must be an integer, got str"),
    "format version true": (_edit_config(lambda r: r.update(format_version=True)), CONFIG_NAME,
                            "must be an integer, got bool"),
    "no adapter config": (_edit_config(lambda r: r.pop("adapter_config")), CONFIG_NAME, "no 'adapter_config'"),
    "r a string": (_edit_config(lambda r: r["adapter_config"].update(r="four")), CONFIG_NAME,
                   "not a valid AdapterConfig: r must be an integer"),
    "unknown config field": (_edit_config(lambda r: r["adapter_config"].update(rank=4)), CONFIG_NAME,
                             "not a valid AdapterConfig: unknown AdapterConfig fields \\['rank'\\]"),
    "no base model": (_edit_config(lambda r: r.pop("base_model")), CONFIG_NAME, "no 'base_model'"),
    "target shapes a list": (_edit_config(lambda r: r["base_model"].update(target_shapes=[1])), CONFIG_NAME,
                             "'target_shapes' must be an object, got list"),
    "target shape of strings": (_edit_config(lambda r: r["base_model"]["target_shapes"].update(
        {"model.layers.0.self_attn.q_proj": ["64", "64"]})), CONFIG_NAME, "list of 2 non-negative integers"),
    "no checksum": (_edit_config(lambda r: r.pop("weights_sha256")), CONFIG_NAME, "no 'weights_sha256'"),
    "config edited, checksum not updated": (_edit_config(lambda r: r["adapter_config"].update(alpha=99.0), resum=False),
                                            CONFIG_NAME, "does not match its own checksum"),
    "no config checksum": (_edit_config(lambda r: r.pop("config_sha256"), resum=False), CONFIG_NAME,
                           "no 'config_sha256'"),
    "catastrophic targets pattern": (_edit_config(lambda r: r["adapter_config"].update(targets="(.*.*)*Z")),
                                     CONFIG_NAME, "not a valid AdapterConfig: targets pattern .* nested quantifiers"),
    "unbalanced targets pattern": (_edit_config(lambda r: r["adapter_config"].update(targets="(")), CONFIG_NAME,
                                   r"not a valid AdapterConfig: targets pattern '\(' is not a valid regular"),
    "deeply nested config": (lambda f: (f / CONFIG_NAME).write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                             CONFIG_NAME, "nests JSON lists or objects too deeply"),
    "5000-digit integer": (lambda f: (f / CONFIG_NAME).write_text('{"format_version": ' + "9" * 5000 + "}"),
                           CONFIG_NAME, "holds a value JSON cannot be read into"),
    "NaN in a weight": (_edit_weights(lambda t: t[_first(t, "v_proj.lora_B")].view(-1).__setitem__(3, math.nan)),
                        WEIGHTS_NAME, "tensor 'model.layers.0.self_attn.v_proj.lora_B' holds 1 NaN or Inf"),
    "Inf in a weight": (_edit_weights(lambda t: t[_first(t, "q_proj.lora_A")].view(-1).__setitem__(0, math.inf)),
                        WEIGHTS_NAME, "tensor 'model.layers.0.self_attn.q_proj.lora_A' holds 1 NaN or Inf"),
    "checksum not hex": (_edit_config(lambda r: r.update(weights_sha256="xyz")), CONFIG_NAME, "64 lower-case hex"),
    "tensor missing": (_edit_weights(lambda t: t.pop(_first(t, ".lora_B"))), WEIGHTS_NAME, "missing tensors"),
    "tensor reshaped": (_edit_weights(lambda t: t.update({_first(t, "q_proj.lora_A"): torch.zeros(5, 64)})), WEIGHTS_NAME,
                        "has shape \\(5, 64\\); the configuration .* needs \\(4, 64\\)"),
    "integer tensor": (_edit_weights(lambda t: t.update({_first(t, "q_proj.lora_A"): torch.zeros(4, 64, dtype=torch.int32)})),
                       WEIGHTS_NAME, "not a floating-point type"),
    "dtype record differs": (_edit_weights(lambda t: t.update({_first(t, "q_proj.lora_A"): t[_first(t, "q_proj.lora_A")].double()})),
                             CONFIG_NAME, "records dtype 'float32'.*holds float64"),
}


@pytest.mark.parametrize("with_adapters", [False, True], ids=["bare", "with-adapters"])
@pytest.mark.parametrize("fault", FAULTS)
def test_every_malformed_file_is_refused_naming_the_file_and_the_model_is_unchanged(saved, fault, with_adapters):
    _, folder = saved
    damage, name, message = FAULTS[fault]
    damage(folder)
    model = small_llama()
    if with_adapters:
        randomize_b(add_adapters(model, HYDRA, seed=3), seed=7)
    before = snapshot(model)
    with pytest.raises(AdapterFileError, match=message) as caught:
        load_adapters(model, folder)
    assert caught.value.path == folder / name and str(folder / name) in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers catching ValueError keep working
    assert_unchanged(model, before)


def test_a_catastrophic_targets_pattern_is_refused_quickly(saved):
    _, folder = saved
    _edit_config(lambda r: r["adapter_config"].update(targets="(.*.*)*Z"))(folder)
    started = time.perf_counter()
    with pytest.raises(AdapterFileError, match="nested quantifiers"):
        load_adapters(small_llama(), folder)
    assert time.perf_counter() - started < 5  # before: ran past 20 s matching module names


def test_non_finite_weights_are_refused_on_save_naming_the_tensor(tmp_path):
    model = randomize_b(add_adapters(small_llama(), HYDRA, seed=0))
    with torch.no_grad():
        adapter_layers(model)["model.layers.1.mlp.down_proj"].lora_B[0, 0] = math.inf
    with pytest.raises(ValueError, match="'model.layers.1.mlp.down_proj.lora_B' holds 1 NaN or Inf values"):
        save_adapters(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_a_peft_folder_given_to_load_adapters_points_to_import_peft(tmp_path):
    export_peft(randomize_b(add_adapters(small_llama(), AdapterConfig(method="lora", r=4))), tmp_path)
    with pytest.raises(AdapterFileError, match="PEFT adapter config.*import_peft"):
        load_adapters(small_llama(), tmp_path)


@pytest.mark.parametrize("other, message, check_weights", [
    (lambda: small_llama(seed=5), "another base model: weight_fingerprint", True),
    (lambda: small_llama(layers=3), "its targets select 9 modules here, the adapter has 6", False),
    (small_gpt2, "another base model: architecture", True),
])
def test_a_load_onto_another_model_is_refused_before_anything_changes(saved, other, message, check_weights):
    _, folder = saved
    model = other()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        load_adapters(model, folder, check_weights=check_weights)
    assert_unchanged(model, before)


def test_a_failure_while_attaching_restores_the_model(saved, monkeypatch):
    _, folder = saved
    model = small_llama()
    before = snapshot(model)
    real_add = adapter_files.add_adapters

    def add_then_fail(m, config, seed=None):
        real_add(m, config, seed=seed)
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(adapter_files, "add_adapters", add_then_fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        load_adapters(model, folder)
    assert_unchanged(model, before)
    assert not adapter_layers(model)


def test_a_failure_halfway_through_copying_restores_the_adapters():
    model = randomize_b(add_adapters(small_llama(), HYDRA, seed=1))
    before = snapshot(model)
    tensors = {f"{n}.{k}": torch.ones_like(getattr(l, k)) for n, l in adapter_layers(model).items()
               for k in ("lora_A", "lora_B", "router")}
    last = sorted(tensors)[-1]
    tensors[last] = torch.ones(7, 7)  # copy_ fails on this one, after others were copied
    with pytest.raises(RuntimeError):
        adapter_files._attach(model, HYDRA, tensors)
    assert_unchanged(model, before)


# --- saving ---------------------------------------------------------------------------------------
def test_save_refuses_merged_adapters_before_writing_anything(tmp_path):
    model = add_adapters(small_llama(), AdapterConfig(method="lora", r=4))
    merge_adapters(model)
    with pytest.raises(RuntimeError, match="merged.*unmerge_adapters first"):
        save_adapters(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


def test_an_interrupted_save_leaves_no_file_and_overwrite_keeps_the_old_files_until_the_end(saved, monkeypatch):
    model, folder = saved
    old = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_adapters(model, folder)
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        raise OSError("disk full")

    monkeypatch.setattr(adapter_files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_adapters(randomize_b(model, seed=9), folder, overwrite=True)
    assert calls and {p.name: p.read_bytes() for p in folder.iterdir()} == old  # no temp file, old ones intact
    with pytest.raises(OSError, match="disk full"):
        save_adapters(model, folder.parent / "fresh")
    assert not (folder.parent / "fresh").exists()


# --- merging --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_gate, message", [
    ("dict-with-one-bad-entry", "layers.1.mlp.down_proj: gate vector must have 3 entries"),
    ("dict-with-unknown-name", "no adapter"),
    ([0.5, float("nan"), 0.5], "non-finite"),
    ("abc", "gate must be a head index"),
    (7, "gate index must lie in 0..2"),
])
def test_a_bad_gate_merges_nothing(bad_gate, message, tokens):
    model = randomize_b(add_adapters(small_llama(), HYDRA, seed=0))
    names = list(adapter_layers(model))
    if bad_gate == "dict-with-one-bad-entry":
        bad_gate = {n: [0.2, 0.3, 0.5] for n in names}
        bad_gate[names[-1]] = [0.5, 0.5]
    elif bad_gate == "dict-with-unknown-name":
        bad_gate = {n: 0 for n in [*names, "model.norm"]}
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        merge_adapters(model, gate=bad_gate)
    assert_unchanged(model, before)
    assert not any(layer.merged for layer in adapter_layers(model).values())


def test_non_finite_adapter_weights_merge_nothing_and_a_failure_while_adding_undoes_the_rest():
    model = randomize_b(add_adapters(small_llama(), AdapterConfig(method="lora", r=4), seed=0))
    layers = list(adapter_layers(model).values())
    with torch.no_grad():
        layers[-1].lora_B[0, 0] = float("inf")
    before = snapshot(model)
    with pytest.raises(ValueError, match="non-finite values.*nothing was merged"):
        merge_adapters(model)
    assert_unchanged(model, before)
    with torch.no_grad():
        layers[-1].lora_B[0, 0] = 0.5
    before = snapshot(model)
    layers[-1]._add_to_base = lambda delta: (_ for _ in ()).throw(RuntimeError("device lost"))
    with pytest.raises(RuntimeError, match="device lost"):
        merge_adapters(model)
    assert not any(layer.merged for layer in layers)
    state, _, _ = snapshot(model)
    for k, v in state.items():
        torch.testing.assert_close(v, before[0][k], atol=1e-6, rtol=0)
    del layers[-1]._add_to_base
    merge_adapters(model)
    with pytest.raises(RuntimeError, match="already merged"):
        merge_adapters(model)
    unmerge_adapters(model)


@pytest.mark.parametrize("build, config, gate", [
    (small_llama, HYDRA, [0.2, 0.5, 0.3]),
    (small_gpt2, AdapterConfig(method="split", r=4, heads=3, gate="task"), 1),
    (small_gpt2, AdapterConfig(method="lora", r=4), None),
], ids=["llama-hydra", "gpt2-split", "gpt2-lora"])
def test_merge_and_unload_gives_a_plain_model_that_saves_and_reloads_exactly(build, config, gate, tokens, tmp_path):
    from transformers import AutoModelForCausalLM
    model = randomize_b(add_adapters(build(), config, seed=0))
    with routing(model, gate=gate):
        expected = model(tokens).logits
    plain = merge_and_unload(model, gate=gate)
    assert plain is model and not any(isinstance(m, AdapterLayer) for m in plain.modules())
    assert set(plain.state_dict()) == set(build().state_dict())
    merged = plain(tokens).logits
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-5)
    assert (merged - build()(tokens).logits).abs().max() > 1e-3  # the merge changed the outputs
    plain.save_pretrained(tmp_path / "plain")
    reloaded, info = AutoModelForCausalLM.from_pretrained(tmp_path / "plain", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(reloaded.eval()(tokens).logits, merged, rtol=0, atol=0)


def test_merge_and_unload_refuses_a_learned_gate_without_one_and_leaves_the_model():
    model = randomize_b(add_adapters(small_llama(), HYDRA, seed=0))
    before = snapshot(model)
    with pytest.raises(ValueError, match="cannot be folded"):
        merge_and_unload(model)
    assert_unchanged(model, before)


# --- PEFT -----------------------------------------------------------------------------------------
CASES = {"llama": (small_llama, ["q_proj", "v_proj", "down_proj"]), "gpt2": (small_gpt2, ["c_attn", "c_fc"])}


def peft_logits(build, folder, tokens, extra: dict | None = None, active: str | None = None):
    from peft import PeftModel
    peft_model = PeftModel.from_pretrained(build(), folder).eval()
    for name, path in (extra or {}).items():
        peft_model.load_adapter(path, adapter_name=name)
    if active is not None:
        peft_model.set_adapter(active)
    with torch.no_grad():
        return peft_model(tokens).logits


@pytest.mark.parametrize("case", CASES)
def test_exported_lora_loads_in_peft_with_equal_outputs(case, tokens, tmp_path):
    build, targets = CASES[case]
    model = randomize_b(add_adapters(build(), AdapterConfig(method="lora", r=4, alpha=8, targets=targets), seed=0))
    expected = model(tokens).logits
    export_peft(model, tmp_path)
    record = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert record["peft_type"] == "LORA" and record["r"] == 4 and record["lora_alpha"] == 8
    assert record["fan_in_fan_out"] is (case == "gpt2")
    got = peft_logits(build, tmp_path, tokens)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - build()(tokens).logits).abs().max() > 1e-3


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method, gate, rank", [
    ("hydra", [0.2, 0.5, 0.3], 4), ("hydra", 2, 4), ("split", [0.6, 0.1, 0.3], 12), ("hydra", "mean", 4),
], ids=["hydra-vector", "hydra-one-hot", "split-vector", "hydra-mean-gates"])
def test_hydra_and_split_under_a_fixed_gate_export_to_one_peft_lora(case, method, gate, rank, tokens, tmp_path):
    from hydralib import mean_gates
    build, targets = CASES[case]
    model = randomize_b(add_adapters(build(), AdapterConfig(method=method, r=4, heads=3, targets=targets), seed=0))
    if gate == "mean":
        gate = mean_gates(model, tokens)
        expected = merge_adapters(copy.deepcopy(model), gate=gate)(tokens).logits
    else:
        with routing(model, gate=gate):
            expected = model(tokens).logits
    export_peft(model, tmp_path, gate=gate)
    record = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert record["r"] == rank and record["lora_alpha"] == pytest.approx(4.0 * rank)  # scaling alpha/r = 16/4 kept
    torch.testing.assert_close(peft_logits(build, tmp_path, tokens), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["hydra", "split"])
def test_one_head_per_adapter_exports_peft_adapters_each_equal_to_its_head(case, method, tokens, tmp_path):
    build, targets = CASES[case]
    model = randomize_b(add_adapters(build(), AdapterConfig(method=method, r=4, heads=3, targets=targets), seed=0))
    export_peft(model, tmp_path, one_head_per_adapter=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head_0", "head_1", "head_2"]
    outputs = []
    for head in range(3):
        with routing(model, gate=head):
            expected = model(tokens).logits
        got = peft_logits(build, tmp_path / "head_0", tokens, extra={f"head_{head}": tmp_path / f"head_{head}"},
                          active=f"head_{head}") if head else peft_logits(build, tmp_path / "head_0", tokens)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        outputs.append(got)
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3  # the heads differ


def test_export_refuses_a_learned_gate_without_one_and_an_existing_folder(tmp_path):
    model = randomize_b(add_adapters(small_llama(), HYDRA, seed=0))
    with pytest.raises(ValueError, match="cannot be folded"):
        export_peft(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    export_peft(model, tmp_path / "a", gate=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_peft(model, tmp_path / "a", gate=1)
    export_peft(model, tmp_path / "a", gate=1, overwrite=True)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_import_peft_equals_peft_outputs(case, rslora, tokens, tmp_path):
    from peft import LoraConfig, get_peft_model
    build, targets = CASES[case]
    peft_model = get_peft_model(build(), LoraConfig(r=4, lora_alpha=6, target_modules=targets, use_rslora=rslora,
                                                    fan_in_fan_out=case == "gpt2"))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    peft_model.save_pretrained(tmp_path)
    expected = peft_model.eval()(tokens).logits
    model = import_peft(build(), tmp_path)
    layers = adapter_layers(model)
    assert len(layers) == 2 * len(targets)
    config = next(iter(layers.values())).config
    assert config.method == "lora" and config.r == 4
    assert config.scaling == pytest.approx(6 / math.sqrt(4) if rslora else 6 / 4)
    torch.testing.assert_close(model(tokens).logits, expected, atol=1e-5, rtol=1e-5)
    save_adapters(model, tmp_path / "ours")  # an imported adapter is an ordinary hydralib adapter
    torch.testing.assert_close(load_adapters(build(), tmp_path / "ours")(tokens).logits, expected, atol=1e-5, rtol=1e-5)


def test_export_then_import_round_trips(tokens, tmp_path):
    model = randomize_b(add_adapters(small_llama(), AdapterConfig(method="lora", r=4, alpha=8), seed=0))
    export_peft(model, tmp_path)
    back = import_peft(small_llama(), tmp_path)
    torch.testing.assert_close(back(tokens).logits, model(tokens).logits, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("change, message, exc", [
    (lambda r: r.update(use_dora=True), "use_dora=True.*cannot represent", AdapterFileError),
    (lambda r: r.update(peft_type="IA3"), "only LoRA adapters", AdapterFileError),
    (lambda r: r.update(r="4"), "'r' must be an integer", AdapterFileError),
    (lambda r: r.pop("lora_alpha"), "no 'lora_alpha'", AdapterFileError),
    (lambda r: r.update(target_modules=["x"]) or None, None, None),  # target_modules are read from the weights
])
def test_import_peft_refuses_what_it_cannot_represent_and_leaves_the_model(change, message, exc, tokens, tmp_path):
    export_peft(randomize_b(add_adapters(small_llama(), AdapterConfig(method="lora", r=4), seed=0)), tmp_path)
    record = json.loads((tmp_path / CONFIG_NAME).read_text())
    change(record)
    (tmp_path / CONFIG_NAME).write_text(json.dumps(record))
    model = small_llama()
    before = snapshot(model)
    if exc is None:
        import_peft(model, tmp_path)
        return
    with pytest.raises(exc, match=message):
        import_peft(model, tmp_path)
    assert_unchanged(model, before)


def test_import_peft_refuses_another_model_and_a_hydralib_folder(saved, tmp_path):
    _, folder = saved
    with pytest.raises(AdapterFileError, match="hydralib adapter config.*load_adapters"):
        import_peft(small_llama(), folder)
    export_peft(randomize_b(add_adapters(small_llama(), AdapterConfig(method="lora", r=4), seed=0)), tmp_path / "p")
    other = small_llama(hidden=32)
    before = snapshot(other)
    with pytest.raises(ValueError, match="does not fit.*another model"):
        import_peft(other, tmp_path / "p")
    assert_unchanged(other, before)
    gpt2 = small_gpt2()
    with pytest.raises(ValueError, match="does not have as a linear layer.*another model"):
        import_peft(gpt2, tmp_path / "p")


def test_a_file_naming_a_non_linear_module_as_target_is_refused_as_another_model(saved):
    _, folder = saved
    text = (folder / CONFIG_NAME).read_text()
    (folder / CONFIG_NAME).write_text(text.replace("model.layers.1.mlp.down_proj", "model.norm"))
    _edit_weights(lambda t: t.update({k.replace("model.layers.1.mlp.down_proj", "model.norm"): t.pop(k)
                                      for k in [k for k in t if k.startswith("model.layers.1.mlp.down_proj")]}))(folder)
    model = small_llama()
    before = snapshot(model)
    with pytest.raises(ValueError, match="another base model: target_shapes.*'model.norm', \\[128, 64\\], None"):
        load_adapters(model, folder, check_weights=False)
    assert_unchanged(model, before)
