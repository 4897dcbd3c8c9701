"""The training loop: learning, resume, determinism, NaN, task routing, and two processes."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hydralib import AdapterConfig, add_adapters, adapter_layers, load_model
from hydralib.data import make_corpus
from hydralib.evaluate import evaluate_generation, evaluate_loss
from hydralib.train import TrainConfig, batch_indices, train

SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=64)
CORPUS = make_corpus(n_components=2, conflict=1.0, n_train=64, n_test=16, seed=0)


def small_run(run_dir=None, steps=8, adapter=AdapterConfig(method="hydra", r=4, heads=2, dropout=0.1), **kwargs):
    model, tokenizer = load_model("tiny-random", **SMALL)
    if adapter is not None:
        add_adapters(model, adapter)
    config = TrainConfig(steps=steps, batch_size=8, lr=5e-3, progress=False, **kwargs.pop("config", {}))
    return train(model, tokenizer, CORPUS["train"], config, run_dir, **kwargs), tokenizer


def test_batches_are_a_function_of_seed_and_step():
    assert batch_indices(10, 0, 25, seed=1) == batch_indices(10, 0, 25, seed=1)
    assert batch_indices(10, 7, 5, seed=1) == batch_indices(10, 0, 12, seed=1)[7:]
    assert sorted(batch_indices(10, 0, 10, seed=1)) == list(range(10))  # one epoch covers each row once
    assert batch_indices(10, 0, 10, seed=1) != batch_indices(10, 0, 10, seed=2)


def test_same_seed_gives_identical_metrics():
    first, _ = small_run()
    second, _ = small_run()
    strip = lambda ms: [{k: v for k, v in m.items() if k != "tokens_per_s"} for m in ms]
    assert strip(first.metrics) == strip(second.metrics)
    assert first.metrics[0]["component_loss"].keys() == {"rotate_left", "reverse_upper"}


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    whole, _ = small_run(tmp_path / "whole", steps=60)
    small_run(tmp_path / "resumed", steps=60, stop_at=30)
    assert not (tmp_path / "resumed" / "adapter").exists()
    assert len((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()) == 30
    resumed, _ = small_run(tmp_path / "resumed", steps=60)
    assert resumed.metrics[-1]["step"] == 60 and len(resumed.metrics) == 60
    assert resumed.metrics[-1]["loss"] == pytest.approx(whole.metrics[-1]["loss"], abs=1e-6)
    for (name, a), (_, b) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["train"]["steps"] == 60 and saved["adapter"]["method"] == "hydra"


def test_nan_loss_stops_with_the_step_and_a_hint():
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="lora", r=4))
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.base.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="at step 1: training diverged. Try a lower lr"):
        train(model, tokenizer, CORPUS["train"], TrainConfig(steps=3, batch_size=4, progress=False))


def test_task_gate_trains_only_the_heads_of_present_components():
    result, _ = small_run(steps=5, adapter=AdapterConfig(method="hydra", r=4, heads=4, gate="task"))
    for layer in adapter_layers(result.model).values():
        used, unused = layer.lora_B[:, :8], layer.lora_B[:, 8:]
        assert used.abs().max() > 0 and unused.abs().max() == 0  # components 0 and 1 only


def test_full_fine_tuning_trains_every_weight():
    model, tokenizer = load_model("tiny-random", **SMALL)
    before = model.model.embed_tokens.weight.detach().clone()
    train(model, tokenizer, CORPUS["train"], TrainConfig(steps=2, batch_size=4, lr=1e-3, progress=False))
    assert not torch.equal(before, model.model.embed_tokens.weight)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    script = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command, out in ((["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], "two.json"),
                         ([], "one.json")):
        done = subprocess.run([sys.executable, *command, str(script), str(tmp_path / out)], env=env, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert len(two["losses"]) == len(one["losses"]) == 4
    for a, b in zip(two["losses"], one["losses"]):
        assert a == pytest.approx(b, rel=1e-4)
    assert two["weight_sum"] == pytest.approx(one["weight_sum"], rel=1e-4)


def test_sequence_router_trains_evaluates_and_generates():
    result, tokenizer = small_run(steps=3, adapter=AdapterConfig(method="hydra", r=4, heads=3,
                                                                 router_level="sequence"))
    loss = evaluate_loss(result.model, tokenizer, CORPUS["test"])
    generated = evaluate_generation(result.model, tokenizer, CORPUS["test"][:4], max_new_tokens=4)
    assert math.isfinite(loss["loss"]) and len(generated["generations"]) == 4
    assert all(layer.routing.held is None for layer in adapter_layers(result.model).values())


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    small_run(tmp_path, steps=10, stop_at=5)
    with pytest.raises(ValueError, match="another training configuration .*steps: checkpoint 10, now 12"):
        small_run(tmp_path, steps=12)
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 10  # left as it was


def test_training_refuses_merged_adapters():
    from hydralib import merge_adapters
    model, tokenizer = load_model("tiny-random", **SMALL)
    merge_adapters(add_adapters(model, AdapterConfig(method="lora", r=4)))
    with pytest.raises(ValueError, match="unmerge_adapters before training"):
        train(model, tokenizer, CORPUS["train"], TrainConfig(steps=1, batch_size=4, progress=False))


def test_full_fine_tuning_of_a_tied_embedding_model_saves(tmp_path):
    from conftest import small_gpt2  # GPT-2 ties its input and output embeddings
    from hydralib.models import build_byte_tokenizer
    tokenizer = build_byte_tokenizer()
    model = small_gpt2()
    model.resize_token_embeddings(len(tokenizer))
    train(model, tokenizer, CORPUS["train"], TrainConfig(steps=1, batch_size=4, progress=False), tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size > 0


def test_learned_router_logs_gate_statistics_and_a_balance_loss_evens_head_usage():
    hydra = AdapterConfig(method="hydra", r=4, heads=3, router_init="kaiming")
    plain, _ = small_run(steps=6, adapter=hydra)
    balanced, _ = small_run(steps=6, adapter=hydra, config={"balance_weight": 5.0})
    first = plain.metrics[0]
    assert 0 <= first["gate_entropy"] <= math.log(3) + 1e-6
    assert sum(first["head_usage"]) == pytest.approx(1.0, abs=1e-5) and 1.0 <= first["balance_loss"] <= 3.0
    assert balanced.metrics[-1]["balance_loss"] < plain.metrics[-1]["balance_loss"]


def test_balance_weight_without_a_learned_router_is_refused():
    with pytest.raises(ValueError, match="balance_weight=1.0 needs a learned router"):
        small_run(steps=1, adapter=AdapterConfig(method="lora", r=4), config={"balance_weight": 1.0})


def test_rows_route_to_their_own_head_not_their_component():
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=4, gate="cluster"))
    rows = [{**r, "route": 3} for r in CORPUS["train"]]  # every sample to head 3, whatever its component
    result = train(model, tokenizer, rows, TrainConfig(steps=3, batch_size=8, lr=5e-3, progress=False))
    for layer in adapter_layers(result.model).values():
        assert layer.lora_B[:, :12].abs().max() == 0 and layer.lora_B[:, 12:].abs().max() > 0


@pytest.mark.parametrize("settings, message", [
    (dict(steps=2.5), "steps must be an integer >= 1, got steps=2.5"),
    (dict(steps=0), "steps must be an integer >= 1"),
    (dict(warmup_ratio=-1), r"warmup_ratio must be in \[0, 1\)"),
    (dict(lr=float("inf")), "lr must be a finite number, got lr=inf"),
    (dict(lr=0), "lr must be > 0"),
    (dict(lr_floor=1.5), r"lr_floor must be in \[0, 1\]"),
    (dict(max_grad_norm=float("nan")), "max_grad_norm must be a finite number > 0 or None"),
    (dict(mixed_precision="fp8"), "unknown mixed_precision 'fp8'"),
])
def test_train_config_refuses_bad_values_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_the_lr_floor_keeps_the_last_step_learning():
    model, tokenizer = load_model("tiny-random", hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                                  num_attention_heads=2, num_key_value_heads=2)
    rows = make_corpus(n_components=2, n_train=32, n_test=4, seed=0)["train"]
    add_adapters(model, AdapterConfig(method="lora", r=2, alpha=4))
    result = train(model, tokenizer, rows, TrainConfig(steps=10, batch_size=8, lr=1e-3, lr_floor=0.1, progress=False))
    assert result.metrics[-1]["lr"] == pytest.approx(1e-4)  # the cosine ends at 10 % of lr, not at zero


def test_resume_refuses_a_checkpoint_made_on_other_rows_or_another_base(tmp_path):
    small_run(tmp_path, steps=10, stop_at=5)
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=2, dropout=0.1))
    config = TrainConfig(steps=10, batch_size=8, lr=5e-3, progress=False)
    other_rows = make_corpus(n_components=2, conflict=1.0, n_train=64, n_test=16, seed=1)["train"]
    with pytest.raises(ValueError, match="was made on other training rows"):
        train(model, tokenizer, other_rows, config, tmp_path)
    other_base, _ = load_model("tiny-random", seed=1, **SMALL)
    add_adapters(other_base, AdapterConfig(method="hydra", r=4, heads=2, dropout=0.1))
    with pytest.raises(ValueError, match="was made on another base model"):
        train(other_base, tokenizer, CORPUS["train"], config, tmp_path)


def test_a_torn_last_log_line_is_dropped_and_damage_in_the_middle_is_refused(tmp_path):
    uninterrupted, _ = small_run(tmp_path / "whole", steps=10)
    small_run(tmp_path / "torn", steps=10, stop_at=5)
    with open(tmp_path / "torn" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 1.2')  # the process was killed while writing step 6
    resumed, _ = small_run(tmp_path / "torn", steps=10)
    assert [m["step"] for m in resumed.metrics] == list(range(1, 11))
    assert resumed.metrics[-1]["loss"] == pytest.approx(uninterrupted.metrics[-1]["loss"], rel=1e-5)
    small_run(tmp_path / "damaged", steps=10, stop_at=5)
    lines = (tmp_path / "damaged" / "metrics.jsonl").read_text().splitlines()
    lines[1] = "not json"
    (tmp_path / "damaged" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2, is not a JSON record"):
        small_run(tmp_path / "damaged", steps=10)


def test_a_second_training_in_the_same_run_dir_is_refused_while_the_first_holds_it(tmp_path):
    from filelock import FileLock
    with FileLock(str(tmp_path / "run") + ".train.lock"):  # as another process training there would
        with pytest.raises(RuntimeError, match="another process is training in"):
            small_run(tmp_path / "run", steps=2)
    assert small_run(tmp_path / "run", steps=2)[0].metrics[-1]["step"] == 2


class _Planted:
    """What a hostile checkpoint holds: unpickling it would create `marker` (any code could run there)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_planted_pickle_in_a_checkpoint_is_refused_and_never_run(tmp_path):
    from hydralib.train import CheckpointError, checkpoint_loads, load_checkpoint
    small_run(tmp_path, steps=10, stop_at=5)
    checkpoint = tmp_path / "checkpoint.pt"
    assert checkpoint_loads(checkpoint) and load_checkpoint(checkpoint)["step"] == 5
    marker = tmp_path / "code_ran"
    state = torch.load(checkpoint, weights_only=True)
    state["step"] = _Planted(marker)
    torch.save(state, checkpoint)
    with pytest.raises(CheckpointError, match=f"{checkpoint} was refused: it holds more than tensors"):
        small_run(tmp_path, steps=10)
    assert not checkpoint_loads(checkpoint)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="posix.mkdir"):
        load_checkpoint(checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{checkpoint} was refused"):
        load_checkpoint(checkpoint)
    checkpoint.unlink()
    checkpoint.mkdir()
    with pytest.raises(CheckpointError, match=f"{checkpoint} is not a readable checkpoint"):
        load_checkpoint(checkpoint)
    checkpoint.rmdir()
    torch.save({"step": 5}, checkpoint)
    with pytest.raises(CheckpointError, match=r"not a hydralib training checkpoint \(missing \['config'"):
        load_checkpoint(checkpoint)
