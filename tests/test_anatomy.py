"""The LoRA-anatomy analysis (paper Observation II): reading adapters, pairwise cosines, embeddings, plots."""
import statistics

import matplotlib
import numpy as np
import pytest
import torch

from hydralib import AdapterConfig, add_adapters, adapter_layers, save_adapters
from hydralib.anatomy import (adapter_tensors, embed, format_table, matrix_of, natural_key, pairwise_cosine,
                              plot_embedding, plotly_embedding, short_names, similarity_table, tensor_points)
from hydralib.models import build_tiny
from conftest import randomize_b, small_gpt2, small_llama

matplotlib.use("Agg")
LORA = AdapterConfig(method="lora", r=4, alpha=8, targets=["q_proj", "v_proj"])
LAYERS = ["L0.q_proj", "L0.v_proj", "L1.q_proj", "L1.v_proj"]


def tiny_lora(init_seed: int, b_seed: int):
    """A 2-block tiny LLaMA with a LoRA on q_proj and v_proj: A drawn from init_seed, B random from b_seed."""
    model, _ = build_tiny(seed=0, num_hidden_layers=2, hidden_size=256)  # the shapes below assume 256
    return randomize_b(add_adapters(model, LORA, seed=init_seed), seed=b_seed, scale=1.0)


def random_lora(seed: int, shape_a=(4, 256), shape_b=(256, 4)) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"layers.0.q_proj": {"A": torch.randn(shape_a, generator=g), "B": torch.randn(shape_b, generator=g)}}


@pytest.fixture(scope="module")
def loras():
    """Three task LoRAs with independent A and B, as after training from different seeds."""
    return {f"task{i}": adapter_tensors(tiny_lora(init_seed=i, b_seed=10 + i)) for i in range(3)}


@pytest.fixture(scope="module")
def embedded(loras):
    """Points and meta as embed and tensor_points give them; the plots need no real embedding."""
    _, meta = tensor_points(loras)
    return np.random.default_rng(0).normal(size=(len(meta), 2)), meta


# --- reading adapters --------------------------------------------------------------------------------
def test_saved_folder_and_run_folder_give_the_live_models_tensors(tmp_path):
    model = tiny_lora(init_seed=3, b_seed=4)
    live = adapter_tensors(model)
    save_adapters(model, tmp_path / "run" / "adapter")
    for source in (tmp_path / "run" / "adapter", str(tmp_path / "run")):
        saved = adapter_tensors(source)
        assert list(saved) == list(live) == list(adapter_layers(model))
        for name in live:
            for matrix in ("A", "B"):
                torch.testing.assert_close(saved[name][matrix], live[name][matrix], rtol=0, atol=0)
    assert live["model.layers.0.self_attn.q_proj"]["A"].shape == (4, 256)
    assert live["model.layers.0.self_attn.q_proj"]["B"].shape == (256, 4)


def test_tensors_are_a_snapshot_not_the_live_parameters():
    model = tiny_lora(init_seed=0, b_seed=1)
    before = adapter_tensors(model)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_A.zero_()
    assert all(tensors["A"].abs().sum() > 0 for tensors in before.values())


def test_missing_adapter_or_model_without_adapters_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved adapter"):
        adapter_tensors(tmp_path)
    with pytest.raises(ValueError, match="no hydralib adapters"):
        adapter_tensors(small_llama())


@pytest.mark.parametrize("method", ["hydra", "split"])
def test_hydra_and_split_keep_their_heads_and_BA_is_the_uniform_gate_update(method):
    config = AdapterConfig(method=method, r=4, heads=3, gate="uniform", targets=["q_proj"])
    model = randomize_b(add_adapters(small_llama(hidden=64), config, seed=0))
    name, layer = next(iter(adapter_layers(model).items()))
    tensors = adapter_tensors(model)[name]
    assert tensors["A"].shape == ((4, 64) if method == "hydra" else (12, 64))
    assert tensors["B"].shape == (64, 12)
    uniform_update = layer.delta_weight(torch.full((3,), 1 / 3)) / config.scaling
    torch.testing.assert_close(matrix_of(tensors, "BA"), 3 * uniform_update.double())


def test_short_names_and_model_order():
    names = list(adapter_tensors(randomize_b(add_adapters(small_gpt2(), AdapterConfig(method="lora", r=2)))))
    short = short_names(names)
    assert short["transformer.h.0.attn.c_proj"] == "L0.attn.c_proj"  # c_proj twice in a block: path kept
    assert short["transformer.h.1.mlp.c_fc"] == "L1.mlp.c_fc"
    assert short_names(["model.layers.3.self_attn.q_proj", "lm_head"]) == {
        "model.layers.3.self_attn.q_proj": "L3.q_proj", "lm_head": "lm_head"}
    assert sorted(["layers.10.q", "layers.2.q", "layers.2.k"], key=natural_key) == ["layers.2.k", "layers.2.q",
                                                                                    "layers.10.q"]


# --- cosine similarity -------------------------------------------------------------------------------
def test_identical_and_positively_scaled_loras_have_cosine_one():
    lora = random_lora(0)
    scaled = {"layers.0.q_proj": {"A": 3 * lora["layers.0.q_proj"]["A"], "B": 0.5 * lora["layers.0.q_proj"]["B"]}}
    for matrix in ("A", "B", "BA"):
        assert pairwise_cosine({"x": lora, "y": lora, "z": scaled}, matrix)["layers.0.q_proj"] == pytest.approx(1.0)


def test_independent_random_loras_are_near_orthogonal():
    loras = {f"t{i}": random_lora(i, shape_a=(8, 512), shape_b=(512, 8)) for i in range(4)}
    for matrix in ("A", "B", "BA"):
        assert abs(pairwise_cosine(loras, matrix)["layers.0.q_proj"]) < 0.1


def test_BA_is_invariant_to_reparametrising_A_and_B_while_A_and_B_are_not():
    """A -> M A, B -> B M^-1 leaves the update B A unchanged: the cosine of BA sees the same LoRA,
    the cosines of A and B see different ones."""
    lora, other = random_lora(0), random_lora(1)
    a, b = lora["layers.0.q_proj"]["A"].double(), lora["layers.0.q_proj"]["B"].double()
    m = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 2 * torch.eye(4)
    moved = {"layers.0.q_proj": {"A": m @ a, "B": b @ torch.linalg.inv(m)}}
    same = {matrix: pairwise_cosine({"lora": lora, "moved": moved}, matrix)["layers.0.q_proj"]
            for matrix in ("A", "B", "BA")}
    assert same["BA"] == pytest.approx(1.0, abs=1e-9)
    assert same["A"] < 0.9 and same["B"] < 0.9
    versus_other = [pairwise_cosine({"other": other, "x": x}, "BA")["layers.0.q_proj"] for x in (lora, moved)]
    assert versus_other[0] == pytest.approx(versus_other[1], abs=1e-9)


def test_loras_from_one_seed_share_A_until_trained():
    """The shared-seed effect: the same init seed gives the same A whatever B becomes."""
    shared = {"task0": adapter_tensors(tiny_lora(init_seed=7, b_seed=1)),
              "task1": adapter_tensors(tiny_lora(init_seed=7, b_seed=2))}
    separate = {"task0": shared["task0"], "task2": adapter_tensors(tiny_lora(init_seed=8, b_seed=3))}
    assert all(c == pytest.approx(1.0) for c in pairwise_cosine(shared, "A").values())
    assert all(abs(c) < 0.15 for c in pairwise_cosine(shared, "B").values())
    assert all(abs(c) < 0.15 for c in pairwise_cosine(separate, "A").values())


def test_untrained_B_gives_nan_not_a_number_that_looks_real():
    zero_b = {"A": torch.randn(4, 8), "B": torch.zeros(8, 4)}
    cosines = pairwise_cosine({"x": {"m.0.q": zero_b}, "y": {"m.0.q": zero_b}}, "B")
    assert np.isnan(cosines["m.0.q"])


@pytest.mark.parametrize("make, message", [
    (lambda: ({"x": random_lora(0)}, "B"), "at least 2 LoRAs"),
    (lambda: ({"x": random_lora(0), "y": random_lora(1)}, "AB"), "matrix must be one of A, B, BA, got matrix='AB'"),
    (lambda: ({"x": random_lora(0), "y": {"layers.1.q_proj": random_lora(1)["layers.0.q_proj"]}}, "A"),
     "LoRA 'y' has other layers than 'x'"),
    (lambda: ({"x": random_lora(0), "y": random_lora(1, shape_a=(8, 256), shape_b=(256, 8))}, "A"),
     r"different sizes \[\(1024,\), \(2048,\)\]"),
])
def test_bad_input_to_pairwise_cosine_is_refused_by_name(make, message):
    loras, matrix = make()
    with pytest.raises(ValueError, match=message):
        pairwise_cosine(loras, matrix)


def test_similarity_table_has_a_row_per_layer_and_a_mean(loras):
    rows = similarity_table(loras)
    assert [row["layer"] for row in rows] == LAYERS + ["mean"]
    for matrix in ("A", "B", "BA"):
        per_layer = pairwise_cosine(loras, matrix)
        assert [row[matrix] for row in rows[:-1]] == list(per_layer.values())
        assert rows[-1][matrix] == pytest.approx(statistics.fmean(per_layer.values()))
        assert all(abs(row[matrix]) < 0.1 for row in rows)  # independent LoRAs
    text = format_table(rows)
    assert text.splitlines()[0].split() == ["layer", "A", "B", "BA"]
    assert "L1.v_proj" in text and len(text.splitlines()) == 6


# --- points and embeddings ---------------------------------------------------------------------------
def test_tensor_points_are_one_row_per_lora_layer_and_matrix(loras):
    X, meta = tensor_points(loras)
    assert X.shape == (3 * 4 * 2, 256 * 4) and len(meta) == len(X)
    assert sum(m["lora"] == "task1" for m in meta) == 8
    assert sum(m["matrix"] == "A" for m in meta) == 12
    assert sorted({m["layer"] for m in meta}) == LAYERS
    first = meta[0]
    assert first == {"lora": "task0", "layer": "L0.q_proj", "layer_index": 0, "module": "q_proj",
                     "name": "model.layers.0.self_attn.q_proj", "matrix": "A"}
    np.testing.assert_array_equal(X[0], loras["task0"][first["name"]]["A"].flatten().numpy())
    X_b, meta_b = tensor_points(loras, matrices=("B",))
    assert X_b.shape == (12, 1024) and {m["matrix"] for m in meta_b} == {"B"}


def test_tensor_points_of_unequal_lengths_are_refused_naming_the_shapes(loras):
    with pytest.raises(ValueError, match=r"different lengths \[1024, 65536\].*BA of L0.q_proj: \(256, 256\)"):
        tensor_points(loras, matrices=("A", "BA"))
    with pytest.raises(ValueError, match="matrix must be one of .*got matrix='C'"):
        tensor_points(loras, matrices=("A", "C"))


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_embed_gives_finite_2d_points_fixed_by_the_seed(method):
    """UMAP's first call compiles numba code: this case takes ~20 s."""
    X = np.random.default_rng(0).normal(size=(12, 64))
    X[6:] += 5  # two groups
    points = embed(X, method, seed=42)
    assert points.shape == (12, 2) and np.isfinite(points).all()
    np.testing.assert_array_equal(points, embed(X, method, seed=42))
    within = np.linalg.norm(points[:6] - points[:6].mean(0), axis=1).mean()
    assert np.linalg.norm(points[:6].mean(0) - points[6:].mean(0)) > 2 * within


def test_embed_refuses_unknown_methods_and_too_few_points():
    with pytest.raises(ValueError, match="method must be one of tsne, umap, got method='pca'"):
        embed(np.zeros((5, 3)), "pca")
    with pytest.raises(ValueError, match="at least 3 points, got shape \\(2, 3\\)"):
        embed(np.zeros((2, 3)))


# --- plots -------------------------------------------------------------------------------------------
def test_plotly_hover_names_lora_layer_and_matrix(embedded):
    points, meta = embedded
    figure = plotly_embedding(points, meta, title="t-SNE")
    texts = [text for trace in figure.data for text in trace.text]
    assert len(texts) == len(meta) == sum(len(trace.x) for trace in figure.data)
    assert "LoRA: task2<br>layer: L1.v_proj<br>matrix: B" in " ".join(texts)
    assert all("layer: L" in text and "matrix: " in text for text in texts)
    buttons = figure.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["all", "A only", "B only"]
    a_only = buttons[1].args[0]["visible"]
    assert [trace.name for trace, shown in zip(figure.data, a_only) if shown] == ["task0 A", "task1 A", "task2 A"]
    menu, title = figure.layout.updatemenus[0], figure.layout.title
    # the menu is anchored at the right edge, the title at the left: they cannot overlap
    assert (menu.x, menu.xanchor, title.x, title.xanchor) == (1, "right", 0.01, "left") and title.text == "t-SNE"


def test_plot_embedding_draws_every_point_with_a_legend(embedded):
    import matplotlib.pyplot as plt
    points, meta = embedded
    figure, ax = plt.subplots()
    plot_embedding(points, meta, ax, title="t-SNE of LoRA tensors")
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(meta)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["lora: task0", "lora: task1", "lora: task2", "matrix: A", "matrix: B"]
    assert ax.get_title() == "t-SNE of LoRA tensors"
    with pytest.raises(ValueError, match="cannot group by 'task'; allowed: 'lora', 'layer'"):
        plot_embedding(points, meta, ax, color_by="task")
    with pytest.raises(ValueError, match=r"shape \(len\(meta\), 2\) = \(24, 2\), got \(23, 2\)"):
        plot_embedding(points[:-1], meta, ax)
    plt.close(figure)


def _small_lora_run_start():
    """(spec, model, tokenizer): a small LoRA run's spec and its model at the start the pipeline draws for it
    (add_adapters with the training seed)."""
    import dataclasses

    from hydralib import add_adapters, load_model
    from hydralib.methods import adapter_config
    from hydralib.specs import synthetic_spec
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=64)
    adapter = adapter_config("lora", 4, targets=["q_proj", "v_proj"])
    spec = dataclasses.replace(synthetic_spec(adapter, 3, n_components=2, steps=4, lr=5e-3, pretrain_steps=0,
                                              n_train=32, n_test=8), model={"name": "tiny-random", **small})
    model, tokenizer = load_model("tiny-random", **small)
    add_adapters(model, adapter, seed=spec.train.seed)
    return spec, model, tokenizer


def test_run_movement_redraws_the_runs_start_from_its_spec_and_reads_its_saved_adapter(tmp_path):
    import dataclasses

    from hydralib import save_adapters
    from hydralib.anatomy import mean_movement, run_movement
    from hydralib.data import make_corpus
    from hydralib.inject import movement_from_init
    from hydralib.train import TrainConfig, train
    spec, model, tokenizer = _small_lora_run_start()
    start = adapter_tensors(model)
    rows = make_corpus(n_components=2, n_train=32, n_test=8, seed=0)["train"]
    model = train(model, tokenizer, rows, TrainConfig(steps=4, batch_size=8, lr=5e-3, progress=False)).model
    save_adapters(model, tmp_path / "adapter")
    moved = run_movement(spec, tmp_path)
    expected = movement_from_init(model, start)
    assert set(moved) == set(expected)
    for name, entry in moved.items():
        assert entry["A"] == pytest.approx(expected[name]["A"], rel=1e-5) and entry["A"] > 0
        assert entry["B_from_zero"] and entry["B_of_trained"] == pytest.approx(1.0)
        assert 0 < entry["A_of_trained"] < 1
    summary = mean_movement(moved)
    assert summary["A"] == pytest.approx(sum(e["A"] for e in moved.values()) / len(moved))
    # another seed draws another start: the movement is then measured from the wrong A and is far larger
    other = dataclasses.replace(spec, train=dataclasses.replace(spec.train, seed=4))
    assert mean_movement(run_movement(other, tmp_path))["A"] > 10 * summary["A"]


def test_run_movement_per_entry_change_is_the_root_mean_square_of_what_was_added(tmp_path):
    """A known answer: an adapter saved as its start plus 0.01 on every entry of A, and 0.03 on every entry of B
    (which starts at zero), moved 0.01 and 0.03 per entry, in every layer."""
    import torch

    from hydralib import save_adapters
    from hydralib.anatomy import mean_movement, run_movement
    from hydralib.inject import adapter_layers
    spec, model, _ = _small_lora_run_start()
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_A.add_(0.01)
            layer.lora_B.fill_(0.03)
    save_adapters(model, tmp_path / "adapter")
    moved = run_movement(spec, tmp_path)
    assert len(moved) == 4
    for entry in moved.values():
        assert entry["A_rms"] == pytest.approx(0.01, rel=1e-4)
        assert entry["B_rms"] == pytest.approx(0.03, rel=1e-4)
    summary = mean_movement(moved)
    assert summary["A_rms"] == pytest.approx(0.01, rel=1e-4) and summary["B_rms"] == pytest.approx(0.03, rel=1e-4)


def test_tsne_perplexity_is_the_default_30_where_the_points_allow_it():
    from hydralib.anatomy import tsne_perplexity
    assert tsne_perplexity(200) == 30.0
    assert tsne_perplexity(32) == pytest.approx(31 / 3)  # the paper's panels of 32 points: about 10
    assert tsne_perplexity(3) == 1.0
    with pytest.raises(ValueError, match="at least 2 points, got n=1"):
        tsne_perplexity(1)


def test_run_gate_profile_measures_again_the_gates_a_routed_run_recorded(tmp_path):
    import dataclasses

    from hydralib.anatomy import run_gate_profile
    from hydralib.clustering import layer_nmi
    from hydralib.methods import adapter_config
    from hydralib.pipeline import execute_run
    from hydralib.specs import synthetic_spec
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=64)
    spec = dataclasses.replace(synthetic_spec(adapter_config("hydra", 4, heads=3), 2, n_components=3, steps=6,
                                              lr=5e-3, pretrain_steps=0, n_train=48, n_test=12),
                               model={"name": "tiny-random", **small})
    result = execute_run(spec, tmp_path)
    profile = run_gate_profile(spec, tmp_path)
    assert profile["gates"].shape == (12, len(result["routing"]["layers"]), 3)
    assert profile["layers"] == result["routing"]["layers"] and len(profile["components"]) == 12
    assert layer_nmi(profile["gates"], profile["components"])["nmi_per_layer"] == pytest.approx(
        result["routing"]["nmi_per_layer"], abs=1e-9)
    first = result["components"].index(next(iter(result["routing"]["usage_by_component"])))
    mine = np.array(profile["components"]) == first
    assert profile["gates"][mine].mean(0) == pytest.approx(
        np.array(result["routing"]["usage_by_component"][result["components"][first]]), abs=1e-6)
    with pytest.raises(ValueError, match="needs a run with heads > 1"):
        run_gate_profile(dataclasses.replace(spec, adapter=adapter_config("lora", 4)), tmp_path)
