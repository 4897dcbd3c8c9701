"""The real-data lane: its run spec trained and scored through the store, the base model's scores, and the
paper-scale shape check."""
import pytest

from hydralib import RunStore
from hydralib.methods import adapter_config, lane_methods, with_lr
from hydralib.bases import LLAMA2_7B, shape_check
from hydralib.pipeline import evaluate_base, execute_run
from hydralib.specs import real_spec
from hydralib.store import RunSpec, run_many
from hydralib.train import METRICS_NAME

from real_fixtures import spec


def test_a_real_run_is_trained_and_scored_through_the_store(small_data, tmp_path):
    """End to end on a tiny random model: the scores of every source, routes from clusters, routing."""
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512)
    run = {"model": {"name": "tiny-random", **small}, "data": spec(),
           "adapter": adapter_config("hydra", 4, heads=3, gate="cluster").to_dict(),
           "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "seed": 0, "device": "cpu", "max_length": 256,
                     "template": "alpaca"},
           "eval": {"max_new_tokens": 4}}
    (result,) = run_many([run], RunStore(tmp_path / "store"), processes=1)
    assert set(result["test_loss"]["per_component"]) == {"gsm8k", "mmlu", "humaneval"}
    assert result["mmlu_n"] == 2 and "mmlu_accuracy" in result  # its value: tests/test_evaluate.py
    assert result["gsm8k_n"] == 2 and len(result["gsm8k_generations"]) == 2 and result["gsm8k_exact_match"] == 0
    assert "pass_at_1" not in result  # running generated code is opt-in
    assert sum(result["clusters"]["train_sizes"]) == 12 and "nmi" in result["routing"]


def test_a_real_run_without_generation_is_scored_by_its_losses_and_mmlu_only(small_data, tmp_path):
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512)
    run = real_spec(adapter_config("lora", 4), 0, model="tiny-random", model_options=small,
                    sources=["gsm8k", "mmlu", "humaneval"], n_train=4, n_test=2, steps=1, lr=1e-3, max_length=256,
                    max_new_tokens=4, generation=False)
    (result,) = run_many([run], RunStore(tmp_path / "store"), processes=1)
    assert set(result["test_loss"]["per_component"]) == {"gsm8k", "mmlu", "humaneval"}
    assert result["mmlu_n"] == 2 and "gsm8k_n" not in result and "gsm8k_generations" not in result
    with pytest.raises(ValueError, match="execute_code=True runs generated code, so it needs generation=True"):
        real_spec(None, 0, model="tiny-random", sources=["humaneval"], n_train=4, n_test=2, steps=1, lr=1e-3,
                  execute_code=True, generation=False)


def test_paper_scale_parameter_counts_match_the_papers_percentages():
    """LLaMA-2-7B on the meta device: Hydra r8 on q_proj and v_proj with 3 heads is 0.124 % of the model in
    the paper's convention, with 10 heads 0.342 % (the paper prints 0.341: it multiplies LoRA's rounded 0.062 %)."""
    for heads, percent in ((3, 0.124), (10, 0.342)):
        check = shape_check(adapter_config("hydra", 8, heads=heads, targets=["q_proj", "v_proj"]))
        assert check["logits"] == (2, 16, LLAMA2_7B["vocab_size"])
        assert check["base"] == 6_738_415_616
        assert check["paper_percent"] == pytest.approx(percent, abs=5e-4)


def test_every_profile_of_notebook_08_builds_on_the_meta_device():
    """The adapters each profile of 08 would train fit LLaMA-2-7B's shapes (the paper profile's model)."""
    from hydralib.suite import PROFILE_DIR, notebook_parameters, plan_suite
    for profile in sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")):
        (notebook, params), = plan_suite(profile, only=["08_real_data"])
        declared = {name: p["default"] for name, p in notebook_parameters(notebook).items()}
        values = {**declared, **params}
        methods = with_lr(lane_methods(values["r"], values["heads"] or len(values["sources"]), values["targets"]),
                          values["lr"])
        for method in methods.values():
            check = shape_check(method["adapter"], length=8)
            assert check["logits"] == (2, 8, LLAMA2_7B["vocab_size"]) and check["trainable"] > 0


def test_the_base_model_is_scored_on_the_runs_test_rows(small_data):
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512)
    spec = real_spec(None, 0, model="tiny-random", model_options=small, sources=["gsm8k", "mmlu"], n_train=4,
                     n_test=3, steps=1, lr=1e-3, max_new_tokens=4)
    scores = evaluate_base(spec)
    assert set(scores["test_loss"]["per_component"]) == {"gsm8k", "mmlu"}
    assert scores["mmlu_n"] == 3 and scores["gsm8k_n"] == 3 and scores["test_loss"]["loss"] > 3


def test_a_real_run_leaves_out_rows_too_long_and_records_validation_loss_per_source(small_data, tmp_path):
    """Validation rows are scored before training and at evenly spaced steps (a stop and a resume, as an
    interruption would), per source; rows longer than max_length never reach training."""
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=512)
    run = {"model": {"name": "tiny-random", **small}, "data": spec(sources=["gsm8k", "mmlu"], n_val=2, n_train=4),
           "adapter": adapter_config("lora", 4).to_dict(),
           "train": {"steps": 4, "batch_size": 2, "lr": 1e-3, "seed": 0, "device": "cpu", "max_length": 90,
                     "template": "alpaca"},
           "eval": {"max_new_tokens": {"gsm8k": 4}, "validation_points": 2}}
    (result,) = run_many([run], RunStore(tmp_path / "store"), processes=1)
    assert [point["step"] for point in result["validation"]] == [0, 2, 4]
    assert all(set(point["per_component"]) == {"gsm8k", "mmlu"} for point in result["validation"])
    assert result["validation"][0]["loss"] != result["validation"][-1]["loss"]
    # the byte-level tiny tokenizer: the fixture's GSM8K rows take 98 tokens, its MMLU rows 71
    assert result["dropped_train_rows"] == {"gsm8k": 4} and result["train_rows"] == 4
    # a run folder left with a checkpoint (an attempt interrupted, here: one that finished) starts over, so every
    # point is measured on the weights of its own step, and the training log is not written twice
    again = tmp_path / "again"
    run_spec = RunSpec.from_dict(run)
    execute_run(run_spec, again)
    redo = execute_run(run_spec, again)
    assert redo["validation"] == result["validation"]
    assert len((again / METRICS_NAME).read_text().splitlines()) == 4
    assert 0 <= result["gsm8k_cut_off"] <= 1 and len(result["gsm8k_correct"]) == 2


def test_validation_steps_are_evenly_spaced_and_end_at_the_last():
    from hydralib.pipeline import validation_steps
    assert validation_steps(16, 4) == [4, 8, 12, 16] and validation_steps(3, 5) == [1, 2, 3]
