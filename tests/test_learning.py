"""The engine end to end: on the pretrained tiny base, 200 LoRA steps learn the synthetic mixture."""
import torch

from hydralib import AdapterConfig, TrainConfig, add_adapters, evaluate_generation, evaluate_loss, load_model, train
from hydralib.data import make_corpus

# The ci profile pretrains the tiny base for as many steps, so CI builds that base once for both.
CI_PRETRAIN_STEPS = 300


def test_200_lora_steps_lower_held_out_loss_and_raise_exact_match():
    torch.manual_seed(0)
    model, tokenizer = load_model("tiny", pretrain_steps=CI_PRETRAIN_STEPS, progress=False)
    corpus = make_corpus(n_components=2, conflict=1.0, n_train=1000, n_test=64, seed=0)
    add_adapters(model, AdapterConfig(method="lora", r=8, alpha=16))
    test = corpus["test"]
    before = evaluate_loss(model, tokenizer, test)
    match_before = evaluate_generation(model, tokenizer, test)["exact_match"]
    train(model, tokenizer, corpus["train"], TrainConfig(steps=200, batch_size=32, lr=5e-3, progress=False))
    after = evaluate_loss(model, tokenizer, test)
    match_after = evaluate_generation(model, tokenizer, test)["exact_match"]
    print(f"held-out loss {before['loss']:.3f} -> {after['loss']:.3f}; token accuracy "
          f"{before['token_accuracy']:.3f} -> {after['token_accuracy']:.3f}; exact match {match_before:.3f} -> "
          f"{match_after:.3f}")
    # measured on 2 CPU cores: loss 4.55 -> 1.20, token accuracy 0.29 -> 0.59, exact match 0 -> 0.062
    # (a deliberately short 300-step base, so CI stays fast)
    assert after["loss"] < before["loss"] - 2.0
    assert after["token_accuracy"] > before["token_accuracy"] + 0.2
    assert match_after > match_before
