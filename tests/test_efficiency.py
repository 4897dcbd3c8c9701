"""Cost measurement: result structure and units, memory accounting, loop = fused, merge error, energy counters."""
import os
import statistics

import pytest
import torch

from hydralib import AdapterConfig, count_parameters, efficiency
from hydralib.methods import implementation_sweep
from hydralib.efficiency import (EnergyCounter, TrainStep, energy_counter, lora_flop_share,
                                 measure_forward, measure_steps, measure_steps_in_processes, merge_error,
                                 peak_step_memory, ratios, repeat_speedups, target_shapes, time_interleaved)
from conftest import randomize_b, small_llama

CPU = torch.device("cpu")
LORA = AdapterConfig(method="lora", r=4, alpha=8)
HYDRA = AdapterConfig(method="hydra", r=4, alpha=8, heads=3)


@pytest.fixture(autouse=True)
def one_thread():
    """Models this small gain nothing from a second thread, and on a busy machine it waits for a core
    (a step measured 200 times slower with two threads than with one beside another job)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def ids():
    return torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))


def test_measure_steps_reports_every_method_in_its_units(ids):
    configs = {"frozen": None, "lora": LORA, "hydra": HYDRA}
    results = measure_steps(configs, small_llama(), ids, steps=2, repeats=3, warmup=1)
    assert list(results) == list(configs)
    for r in results.values():
        assert len(r["step_times"]) == 6 and len(r["repeat_step_s"]) == 3
        assert all(t > 0 for t in r["step_times"])
        assert r["tokens_per_s"] == pytest.approx(ids.numel() / r["step_s"])
        assert r["peak_bytes"] > 0 and r["joules_per_step"] is None and r["repeat_joules"] is None
    assert results["frozen"]["trainable"] == 0
    assert results["lora"]["trainable"] == results["lora"]["paper"]
    hydra = TrainStep(small_llama(), HYDRA, CPU)
    assert results["hydra"]["trainable"] == count_parameters(hydra.model).trainable
    assert results["hydra"]["paper"] == 2 * results["lora"]["paper"]  # (1 A + 3 B) / 2 rank-4 LoRAs
    assert ratios(results, reference="lora")["hydra"] == pytest.approx(results["hydra"]["step_s"] / results["lora"]["step_s"])


def test_each_replicate_is_a_process_of_its_own_and_gives_one_block(ids):
    configs = {"frozen": None, "lora": LORA}
    results = measure_steps_in_processes(configs, "tiny-random", ids, replicates=2, steps=2, warmup=1)
    assert list(results) == list(configs)
    pids = results["lora"]["pids"]
    assert len(set(pids)) == 2 and os.getpid() not in pids  # two fresh processes, neither this one
    for r in results.values():
        assert len(r["repeat_step_s"]) == 2 and len(r["step_times"]) == 4 and r["repeat_joules"] is None
        assert r["step_s"] == pytest.approx(statistics.median(r["step_times"]))
        assert r["tokens_per_s"] == pytest.approx(ids.numel() / r["step_s"]) and r["peak_bytes"] > 0
    assert results["frozen"]["trainable"] == 0 and results["lora"]["trainable"] > 0
    assert len(repeat_speedups(results, "lora")["frozen"]) == 2
    with pytest.raises(ValueError, match="replicates"):
        measure_steps_in_processes(configs, "tiny-random", ids, replicates=0)


def test_ratios_and_speedups_are_taken_against_the_reference():
    results = {"ref": {"step_s": 2.0, "repeat_step_s": [2.0, 4.0], "joules_per_step": None, "repeat_joules": None},
               "slow": {"step_s": 3.0, "repeat_step_s": [4.0, 5.0], "joules_per_step": None, "repeat_joules": None}}
    assert ratios(results, reference="ref") == {"ref": 1.0, "slow": 1.5}
    assert repeat_speedups(results, reference="ref")["slow"] == [0.5, 0.8]
    with pytest.raises(ValueError, match="'joules_per_step' was not measured"):
        ratios(results, key="joules_per_step", reference="ref")
    with pytest.raises(ValueError, match="'repeat_joules' was not measured"):
        repeat_speedups(results, reference="ref", key="repeat_joules")


def test_energy_is_measured_per_step_and_per_repeat_when_a_counter_is_given(ids, tmp_path):
    counter_file = tmp_path / "energy_uj"
    counter_file.write_text("0")

    class Ticking(EnergyCounter):
        def read(self):  # 0.5 J more at every read: each step spans one read to the next
            value = int(counter_file.read_text()) + 500_000
            counter_file.write_text(str(value))
            return [value]

    results = measure_steps({"lora": LORA}, small_llama(), ids, steps=2, repeats=2, warmup=1,
                            energy=Ticking([counter_file], [10**12]))
    assert results["lora"]["joules_per_step"] == pytest.approx(0.5)
    assert results["lora"]["repeat_joules"] == pytest.approx([0.5, 0.5])


def test_adapter_flop_share_is_2r_over_d_for_square_layers():
    assert lora_flop_share([(4096, 4096)], 32) == pytest.approx(2 * 32 / 4096)
    shapes = target_shapes(small_llama())
    assert len(shapes) == 2 * 7 and (64, 128) in shapes and (128, 64) in shapes  # q k v o gate up down, 2 layers
    assert lora_flop_share(shapes, 8) > lora_flop_share(shapes, 4)


def test_cpu_memory_accounting_grows_with_rank_by_at_least_the_adapter_state(ids):
    small, large = (TrainStep(small_llama(), AdapterConfig(method="lora", r=r, alpha=2 * r), CPU) for r in (8, 32))
    small_bytes, large_bytes = peak_step_memory(small, ids), peak_step_memory(large, ids)
    extra = sum(p.numel() for p in large.trainable) - sum(p.numel() for p in small.trainable)
    assert large_bytes - small_bytes >= 4 * 4 * extra  # weight, gradient and two AdamW moments, float32
    assert peak_step_memory(small, ids) == small_bytes  # an accounting, not a noisy reading


def test_the_official_loop_and_fused_heads_take_the_same_steps(ids):
    fused, loop = (TrainStep(small_llama(), AdapterConfig(method="hydra", r=4, heads=3, implementation=impl), CPU)
                   for impl in ("fused", "loop"))
    randomize_b(fused.model)
    randomize_b(loop.model)
    for _ in range(2):  # the second loss is after one AdamW update from each path's own gradients
        assert fused(ids) == pytest.approx(loop(ids), abs=1e-5)


def test_merge_error_is_float_error_for_fixed_gates_and_real_for_a_mean_gate(ids):
    lora = randomize_b(TrainStep(small_llama(), LORA, CPU).model)
    hydra = randomize_b(TrainStep(small_llama(), HYDRA, CPU).model)
    before = hydra(ids).logits
    assert merge_error(lora, ids, gate=None)["max_abs_diff"] < 1e-4
    assert merge_error(hydra, ids, gate=1)["max_abs_diff"] < 1e-4
    assert merge_error(hydra, ids, gate=[0.2, 0.5, 0.3])["max_abs_diff"] < 1e-4
    mean = merge_error(hydra, ids, gate="mean")
    assert mean["max_abs_diff"] > 1e-3 and 0 < mean["mean_abs_diff"] < mean["max_abs_diff"]
    torch.testing.assert_close(hydra(ids).logits, before, rtol=0, atol=0)  # measured on a copy


def test_energy_counter_says_why_when_there_is_nothing_to_read(tmp_path, monkeypatch):
    counter, reason = energy_counter(root=tmp_path)
    assert counter is None and str(tmp_path) in reason and "cannot be measured" in reason
    package = tmp_path / "intel-rapl:0"
    (package / "intel-rapl:0:0").mkdir(parents=True)  # a subdomain: inside the package's count, never added
    (package / "energy_uj").write_text("1000\n")
    (package / "max_energy_range_uj").write_text("5000000\n")

    def refuse(path):
        raise PermissionError(f"[Errno 13] Permission denied: '{path}'")

    monkeypatch.setattr(efficiency, "_read_microjoules", refuse)
    counter, reason = energy_counter(root=tmp_path)
    assert counter is None and "not readable" in reason and "Permission denied" in reason
    counter, reason = energy_counter(device="cuda", root=tmp_path)
    assert counter is None and "NVML" in reason


def test_energy_counter_reads_package_counters_and_unwraps_them(tmp_path):
    package = tmp_path / "intel-rapl:0"
    (package / "intel-rapl:0:0").mkdir(parents=True)
    (package / "energy_uj").write_text("4000000\n")
    (package / "max_energy_range_uj").write_text("5000000\n")
    counter, reason = energy_counter(root=tmp_path)
    assert counter.files == [package / "energy_uj"] and "intel-rapl:0" in reason
    start = counter.read()
    (package / "energy_uj").write_text("1500000\n")  # wrapped past 5 J: 1 J to the top, then 1.5 J
    assert counter.joules(start, counter.read()) == pytest.approx(2.5)


def test_interleaving_rotates_the_order_and_drops_the_warmup():
    calls = []
    actions = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds, joules = time_interleaved(actions, rounds=2, warmup=1, device=CPU)
    assert calls == list("abc" "bca" "cab")
    assert {name: len(t) for name, t in seconds.items()} == {"a": 2, "b": 2, "c": 2}
    assert joules == {"a": [], "b": [], "c": []}


def test_forward_latency_is_measured_for_every_model(ids):
    models = {"lora": TrainStep(small_llama(), LORA, CPU).model, "base": small_llama()}
    results = measure_forward(models, ids, steps=3, warmup=0)
    assert list(results) == ["lora", "base"] and all(len(r["times"]) == 3 for r in results.values())


@pytest.mark.parametrize("call, message", [
    (lambda ids: implementation_sweep(8, [1, 0]), r"\[1, 0\]"),
    (lambda ids: measure_steps({"lora": LORA}, small_llama(), ids, steps=0), "steps=0"),
    (lambda ids: time_interleaved({}, rounds=0, warmup=0, device=CPU), "rounds=0"),
    (lambda ids: ratios({"lora": {"step_s": 1.0}}, reference="LoRA r99"), "'LoRA r99'"),
    (lambda ids: lora_flop_share([(64, 64)], 0), "r=0"),
    (lambda ids: merge_error(TrainStep(small_llama(), HYDRA, CPU).model, ids, gate="median"), "'median'"),
    (lambda ids: merge_error(TrainStep(small_llama(), LORA, CPU).model, ids, gate="mean"), "gate='mean' needs"),
])
def test_bad_input_is_refused_naming_the_value(ids, call, message):
    with pytest.raises(ValueError, match=message):
        call(ids)
