"""Trains a few Hydra steps; run by test_train under torch.distributed.run with 2 CPU processes (gloo)."""
import json
import sys

import torch

from hydralib import AdapterConfig, add_adapters, load_model
from hydralib.data import make_corpus
from hydralib.train import TrainConfig, train

model, tokenizer = load_model("tiny-random", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                              max_position_embeddings=64)
add_adapters(model, AdapterConfig(method="hydra", r=4, heads=2))
rows = make_corpus(n_components=2, n_train=64, n_test=8, seed=0)["train"]
result = train(model, tokenizer, rows, TrainConfig(steps=4, batch_size=8, grad_accum=2, lr=5e-3, progress=False))
if torch.distributed.is_initialized():
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
else:
    world, rank = 1, 0
if rank == 0:
    weight_sum = sum(p.double().abs().sum().item() for p in result.model.parameters() if p.requires_grad)
    with open(sys.argv[1], "w") as f:
        json.dump({"processes": world, "losses": [m["loss"] for m in result.metrics], "weight_sum": weight_sum}, f)
