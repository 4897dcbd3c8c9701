"""Scoring: loss per component, exact match, GSM8K numbers, multiple choice, sandboxed HumanEval."""
import contextlib
import math
from types import SimpleNamespace

import pytest
import torch

from hydralib import load_model
from hydralib.data import load_humaneval, make_corpus
from hydralib.evaluate import (evaluate_loss, exact_match, humaneval_pass_at_1, is_correct,
                               multiple_choice_accuracy)

SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, max_position_embeddings=256)


def test_exact_match_overall_and_per_component():
    rows = [{"output": "abc", "component_name": "x"}, {"output": "ABC", "component_name": "x"},
            {"output": "cba", "component_name": "y"}]
    score = exact_match(rows, ["abc ", "abd", "cba"])
    assert score["exact_match"] == pytest.approx(2 / 3)
    assert score["per_component"] == {"x": 0.5, "y": 1.0}


def test_gsm8k_scorer_compares_final_numbers():
    row = {"output": "so 3 + 4 = 7\n#### 7", "answer": "7"}
    assert is_correct(row, "3 and 4 make 7", "gsm8k")
    assert not is_correct(row, "#### 8", "gsm8k")
    with pytest.raises(ValueError, match="unknown scorer"):
        is_correct(row, "7", "bleu")


def test_loss_per_component_and_perplexity():
    model, tokenizer = load_model("tiny-random", **SMALL)
    rows = make_corpus(n_components=3, n_train=30, n_test=12, seed=0)["test"]
    result = evaluate_loss(model, tokenizer, rows)
    assert set(result["per_component"]) == {"rotate_left", "reverse_upper", "mirror"}
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["loss"] > 4  # an untrained byte model is near uniform over 259 tokens (ln 259 = 5.56)
    assert 0 <= result["token_accuracy"] < 0.2


class PrefersOneToken(torch.nn.Module):
    """A stand-in language model whose next token is always `token_id`: its answers are known."""

    def __init__(self, token_id: int, vocab: int):
        super().__init__()
        self.token_id, self.vocab = token_id, vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # for next(model.parameters()).device

    def forward(self, input_ids, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.token_id] = 1.0
        return SimpleNamespace(logits=logits)


def test_multiple_choice_scores_each_question_once():
    _, tokenizer = load_model("tiny-random", **SMALL)
    rows = [{"instruction": f"Q{i}?\nA. a\nB. b\nC. c\nD. d", "answer": "ABCD"[i % 4], "subject": s,
             "choices": list("abcd")} for i, s in enumerate(["math", "math", "law"])]
    always_b = PrefersOneToken(tokenizer.encode(" B", add_special_tokens=False)[-1], len(tokenizer))
    result = multiple_choice_accuracy(always_b, tokenizer, rows, shots={"math": rows[:1]}, k_shot=1)
    assert result["per_subject"] == {"law": 0.0, "math": 0.5}  # answers A, B (math) and C (law)
    assert result["accuracy"] == pytest.approx(1 / 3)


def test_humaneval_runs_only_when_allowed_and_in_a_sandbox():
    problems = load_humaneval()[:3]
    solutions = [p["output"] for p in problems]
    with pytest.raises(PermissionError, match="allow_execution=True"):
        humaneval_pass_at_1(problems, solutions)
    assert humaneval_pass_at_1(problems, solutions, allow_execution=True)["pass_at_1"] == 1.0
    wrong = ["    return None\n", "    while True:\n        pass\n", solutions[2]]
    result = humaneval_pass_at_1(problems, wrong, allow_execution=True, timeout=2.0)
    assert result["pass_at_1"] == pytest.approx(1 / 3)
    assert list(result["passed"].values()) == [False, False, True]


def test_multiple_choice_picks_the_likeliest_letter():
    """A model whose next-token logits favour one letter scores exactly the rows with that answer."""
    import torch

    model, tokenizer = load_model("tiny-random", **SMALL)
    c_token = tokenizer.encode(" C", add_special_tokens=False)[-1]
    biased = torch.zeros(model.config.vocab_size)
    biased[c_token] = 1000.0  # far above what a random model's logits differ by
    model.lm_head.register_forward_hook(lambda module, args, out: out + biased)
    rows = [{"instruction": "Q?\nA. a\nB. b\nC. c\nD. d", "answer": letter, "subject": "s"} for letter in "ABCC"]
    assert multiple_choice_accuracy(model, tokenizer, rows)["accuracy"] == 0.5


def test_gate_profile_gives_each_row_its_gate_per_layer():
    from hydralib import AdapterConfig, add_adapters, load_model
    from hydralib.data import make_corpus
    from hydralib.evaluate import gate_profile
    rows = make_corpus(n_components=3, n_train=12, n_test=6, seed=0)["train"]
    small = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=64)
    for gate in ("task", "learned"):
        model, tokenizer = load_model("tiny-random", **small)
        add_adapters(model, AdapterConfig(method="hydra", r=4, heads=3, gate=gate), seed=0)
        profile = gate_profile(model, tokenizer, rows, batch_size=5)
        assert profile["gates"].shape == (12, len(profile["layers"]), 3)
        assert torch.allclose(profile["gates"].sum(-1), torch.ones(12, len(profile["layers"])), atol=1e-5)
        if gate == "task":
            chosen = profile["gates"].argmax(-1)
            assert chosen.tolist() == [[r["component"]] * len(profile["layers"]) for r in rows]
        # the loss pass records the same routing (the prompt's gates do not depend on the response after them)
        from_loss = evaluate_loss(model, tokenizer, rows, batch_size=4, gates=True)["gates"]
        assert from_loss["layers"] == profile["layers"]
        assert torch.allclose(from_loss["gates"], profile["gates"], atol=1e-5)
        if gate == "learned":
            assert not torch.allclose(profile["gates"][0], profile["gates"][1], atol=1e-3)  # rows route differently
    with pytest.raises(ValueError, match="this model has no hydralib adapters to route"):
        evaluate_loss(load_model("tiny-random", **small)[0], tokenizer, rows, gates=True)


def test_multiple_choice_in_a_training_template_asks_with_the_training_prompt():
    """template='alpaca': the model reads the training prompt and answers with the bare letter."""
    model, tokenizer = load_model("tiny-random", **SMALL)
    b_token = tokenizer.encode("B", add_special_tokens=False)[-1]
    biased = torch.zeros(model.config.vocab_size)
    biased[b_token] = 1000.0
    model.lm_head.register_forward_hook(lambda module, args, out: out + biased)
    read = []
    model.register_forward_pre_hook(lambda module, args, kwargs: read.append(kwargs["input_ids"][0].tolist()),
                                    with_kwargs=True)
    rows = [{"instruction": "Q?\nA. a\nB. b\nC. c\nD. d", "answer": letter, "subject": "s"} for letter in "BBAD"]
    assert multiple_choice_accuracy(model, tokenizer, rows, template="alpaca")["accuracy"] == 0.5
    assert tokenizer.decode(read[-1], skip_special_tokens=True).endswith("Q?\nA. a\nB. b\nC. c\nD. d\n\n### Response:\n")
    multiple_choice_accuracy(model, tokenizer, rows)
    assert tokenizer.decode(read[-1], skip_special_tokens=True).endswith("D. d\nAnswer: ")
    with pytest.raises(ValueError, match="k_shot=1 needs template=None"):
        multiple_choice_accuracy(model, tokenizer, rows, shots={"s": rows}, k_shot=1, template="alpaca")


def test_the_zero_shot_letter_read_from_the_loss_pass_is_multiple_choice_accuracys_answer():
    """evaluate_real reads MMLU's zero-shot answer from the loss pass: the same letter as asking separately."""
    from hydralib.evaluate import evaluate_real, template_letter_ids
    model, tokenizer = load_model("tiny-random", **SMALL)
    rows = [{"instruction": f"Q{i}?\nA. a\nB. b\nC. c\nD. d", "input": "", "output": letter, "answer": letter,
             "subject": "s", "source": "mmlu", "component": 0, "component_name": "mmlu"}
            for i, letter in enumerate("ABCDDCBAAB")]
    separate = multiple_choice_accuracy(model, tokenizer, rows, template="alpaca")
    loss = evaluate_loss(model, tokenizer, rows, "alpaca", 128, batch_size=3, choice_ids=template_letter_ids(tokenizer))
    assert [float("ABCD"[c] == r["answer"]) for c, r in zip(loss["choices"], rows)] == separate["correct"]
    scores = evaluate_real(model, tokenizer, rows, {"mmlu_shots": 1}, "alpaca", 128,
                           shots={"s": [{**rows[0], "instruction": "Shot?"}]})
    assert scores["mmlu_correct"] == separate["correct"] and scores["mmlu_n"] == 10 and scores["mmlu_shots"] == 1
    assert len(scores["mmlu_few_shot_correct"]) == 10 and "choices" not in scores["test_loss"]


def test_generation_says_which_answers_ran_out_of_budget():
    from hydralib.evaluate import generate
    model, tokenizer = load_model("tiny-random", **SMALL)
    eos = torch.zeros(model.config.vocab_size)
    eos[tokenizer.eos_token_id] = 1000.0  # every row ends at once
    rows = [{"instruction": "say", "input": "", "output": "x"}] * 2
    texts, endings = generate(model, tokenizer, rows, "alpaca", 3, with_endings=True)
    assert len(texts) == 2 and endings in (["cut off", "cut off"], ["complete", "complete"])
    model.lm_head.register_forward_hook(lambda module, args, out: out + eos)
    assert generate(model, tokenizer, rows, "alpaca", 3, with_endings=True) == (["", ""], ["complete", "complete"])


def test_rows_batched_by_length_come_back_in_their_own_order():
    """evaluate_loss, gate_profile and generate batch rows of similar length together; each row's result
    is the one it gets alone."""
    from hydralib import AdapterConfig, add_adapters
    from hydralib.evaluate import gate_profile, generate
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=3, gate="learned"), seed=0)  # Kaiming router
    rows = [{"instruction": "q" * n, "input": "", "output": "A", "answer": "A", "component": 0}
            for n in (30, 2, 17, 5, 40, 1)]
    together = evaluate_loss(model, tokenizer, rows, "alpaca", 128, batch_size=4, choice_ids=[65, 66, 67, 68])
    alone = [evaluate_loss(model, tokenizer, [r], "alpaca", 128, choice_ids=[65, 66, 67, 68])["choices"][0]
             for r in rows]
    assert together["choices"] == alone
    profile = gate_profile(model, tokenizer, rows, "alpaca", 128, batch_size=4)["gates"]
    single = torch.cat([gate_profile(model, tokenizer, [r], "alpaca", 128)["gates"] for r in rows])
    assert torch.allclose(profile, single, atol=1e-5) and not torch.allclose(profile[0], profile[1], atol=1e-3)
    assert generate(model, tokenizer, rows, "alpaca", 3, batch_size=4) == [
        generate(model, tokenizer, [r], "alpaca", 3)[0] for r in rows]


def write_scripts(model, script: list[list[int]]) -> None:
    """Make the model write script[i] in row i, one token per decoding step (then its last token), whatever the
    prompt: how a stopping rule is tested on known text."""
    calls = []

    def scripted(module, args, out):
        step = len(calls)
        calls.append(step)
        forced = torch.full_like(out, -1000.0)
        for row, tokens in enumerate(script[:out.shape[0]]):
            forced[row, -1, tokens[min(step, len(tokens) - 1)]] = 1000.0
        return forced
    model.lm_head.register_forward_hook(scripted)


def test_a_stop_pattern_ends_each_row_where_its_answer_is_complete():
    """GSM8K's answer is complete after its '#### <number>' line: generation stops there, row by row, and the
    text keeps the answer line; the row counts as finished, not cut off."""
    import re
    from hydralib.evaluate import STOPS, StopWhenMatched, generate
    model, tokenizer = load_model("tiny-random", **SMALL)
    script = [tokenizer.encode(text, add_special_tokens=False) for text in ("so 7\n#### 7\nmore text", "x" * 40)]
    write_scripts(model, script)
    rows = [{"instruction": "q", "input": "", "output": "7"}, {"instruction": "q", "input": "", "output": "7"}]
    texts, endings = generate(model, tokenizer, rows, "alpaca", 30, with_endings=True, stop=STOPS["gsm8k"])
    assert texts[0] == "so 7\n#### 7" and endings == ["complete", "cut off"] and len(texts[1]) == 30
    assert re.search(STOPS["gsm8k"], "a\n### Instruction") and re.search(STOPS["gsm8k"], "14.\n##### Instruction:")
    assert not re.search(STOPS["gsm8k"], "#### 7") and not re.search(STOPS["gsm8k"], "so 3 ### 4\n")
    criterion = StopWhenMatched(tokenizer, 1, STOPS["humaneval"])
    ids = torch.tensor([[0] + tokenizer.encode("    return x\ndef f", add_special_tokens=False),
                        [0] + tokenizer.encode("    return x\n    y", add_special_tokens=False)])
    assert criterion(ids, None).tolist() == [True, False]


def test_a_row_in_a_loop_stops_there_and_is_counted_apart_from_the_budget():
    """Greedy decoding does not leave a loop: with stop_loops a row stops once a block of tokens repeats 3 times
    running (24 tokens at least), row by row, and says "loop"; text that repeats less, or changes, goes on."""
    from hydralib.evaluate import StopWhenLooping, generate
    model, tokenizer = load_model("tiny-random", **SMALL)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
    varied = torch.randint(100, 200, (200,), generator=torch.Generator().manual_seed(0)).tolist()  # no block repeats
    script = [encode("so 1" + " = 20 / 50" * 40), varied]
    write_scripts(model, script)
    rows = [{"instruction": "q", "input": "", "output": "7"}] * 2
    texts, endings = generate(model, tokenizer, rows, "alpaca", 120, with_endings=True, stop_loops=True)
    block = len(encode(" = 20 / 50"))
    assert endings == ["loop", "cut off"] and texts[0].count("= 20 / 50") == max(3, -(-24 // block))
    assert generate(model, tokenizer, rows, "alpaca", 120, with_endings=True)[1] == ["cut off", "cut off"]
    criterion = StopWhenLooping(prompt_length=1)
    twice, period_one = encode("He has 5 pens.\n" * 2), [7] * 30
    ids = torch.tensor([[0] + twice + [9] * (30 - len(twice)), [0] + period_one])
    assert criterion(ids, None).tolist() == [False, True]


def test_the_head_on_response_positions_only_gives_the_full_forwards_scores(monkeypatch):
    """batch_logits applies a plain LM head to the response positions only: loss, token accuracy and the
    multiple-choice answer equal those of the full forward pass."""
    import hydralib.inject as inject
    from hydralib import AdapterConfig, add_adapters
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=3, gate="learned"), seed=0)
    rows = [{"instruction": "q" * n, "input": "", "output": "AB" * (n % 5 + 1), "component": n % 2,
             "component_name": f"c{n % 2}"} for n in (3, 30, 7, 12, 1, 25)]
    fast = evaluate_loss(model, tokenizer, rows, "alpaca", 128, 4, choice_ids=[65, 66, 67])
    monkeypatch.setattr(inject, "PLAIN_HEAD_MODELS", ())  # the full forward pass, logits at every position
    full = evaluate_loss(model, tokenizer, rows, "alpaca", 128, 4, choice_ids=[65, 66, 67])
    assert fast["choices"] == full["choices"] and fast["per_component"].keys() == full["per_component"].keys()
    for key in ("loss", "token_accuracy"):
        assert fast[key] == pytest.approx(full[key], rel=1e-5)
        assert all(fast["per_component"][c][key] == pytest.approx(full["per_component"][c][key], rel=1e-5)
                   for c in full["per_component"])


def test_a_generated_source_without_a_budget_is_named():
    from hydralib.evaluate import evaluate_real
    model, tokenizer = load_model("tiny-random", **SMALL)
    rows = [{"instruction": "q", "input": "", "output": "#### 1", "answer": "1", "source": "gsm8k", "component": 0,
             "component_name": "gsm8k"}]
    with pytest.raises(ValueError, match="max_new_tokens=\\{'humaneval': 8\\} has no budget for 'gsm8k'"):
        evaluate_real(model, tokenizer, rows, {"max_new_tokens": {"humaneval": 8}}, "alpaca", 64)


def test_bf16_autocast_scoring_stores_frozen_weights_in_bf16_with_the_same_results(monkeypatch):
    """Under CPU autocast to bf16, scoring stores the frozen linear weights in bf16 for the call (no cast at each
    forward pass): the same losses and generations as casting at every call, and the fp32 weights come back."""
    import hydralib.evaluate as evaluate_module
    from hydralib import AdapterConfig, add_adapters
    from hydralib.evaluate import generate
    model, tokenizer = load_model("tiny-random", **SMALL)
    add_adapters(model, AdapterConfig(method="hydra", r=4, heads=2), seed=0)
    rows = make_corpus(n_components=2, n_train=10, n_test=6, seed=0)["test"]
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []
    model.model.layers[0].self_attn.q_proj.base.register_forward_pre_hook(lambda m, args: seen.append(m.weight.dtype))

    def score():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return evaluate_loss(model, tokenizer, rows), generate(model, tokenizer, rows, max_new_tokens=4)

    stored = score()
    assert set(seen) == {torch.bfloat16}
    monkeypatch.setattr(evaluate_module, "frozen_linear_weights_in", lambda model, dtype: contextlib.nullcontext())
    seen.clear()
    cast_each_call = score()
    assert set(seen) == {torch.float32}
    assert stored[0]["loss"] == cast_each_call[0]["loss"] and stored[1] == cast_each_call[1]
    assert all(p.dtype == torch.float32 and torch.equal(p, weights[n]) for n, p in model.named_parameters())
