"""How routing relates to the true components, and how strongly it routes, from a gate profile.

A gate profile (evaluate.gate_profile) holds each test row's gate, averaged over its prompt tokens, at every
adapted layer: (rows, layers, heads). Each layer's router starts independently, so head 3 of one layer has
nothing to do with head 3 of another: averaging the gates over layers before the argmax (what routing_summary
did first, its "nmi") understates a learned router and favours gates whose heads line up across layers by
construction (task, cluster, a cluster warm-start). Here the NMI is measured

- per layer (the argmax of each layer's own gate): nmi_per_layer, and its mean and maximum over layers;
- after matching heads across layers (nmi_matched): each layer's heads are permuted onto a reference layer's
  (the layer with the highest per-layer NMI) by the Hungarian algorithm on how much the two layers' heads
  are used by the same rows (no labels), then the matched gates are averaged and the argmax taken.

Beside the NMI, how strongly it routes (an argmax NMI can be high while every gate is near 1/N):

- top_gate_mean: the mean largest gate weight (1/N for a uniform gate, 1 for a one-hot gate);
- gate_entropy_mean: the mean entropy of a gate (nats), against its uniform level log N (gate_entropy_uniform);
- majority_head_share: the share of rows whose top head at a layer is the head most rows of their component
  take at that layer (averaged over layers; about 1/N for heads drawn at random, 1 when each component keeps
  to one head; a gate without a single largest weight, e.g. uniform, has no top head and counts as 0).

All over rows and layers of the prompt-averaged gates: a token router that switches heads within a prompt
looks weaker here than it is per token.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .clustering import routing_mutual_information


def routing_summary(profile: dict, rows: Sequence[dict], components: Sequence[str]) -> dict:
    """What routing did on the test rows, from their gate profile ({"layers", "gates": (rows, layers, heads)}).

    The keys of the first summary: layers, usage_by_component (the mean gate per component and layer), mi and
    nmi (of the head with the largest gate averaged over layers: kept for comparison, biased as the module
    docstring says); and the measures of this module: nmi_per_layer, nmi_layer_mean, nmi_layer_max,
    nmi_matched (and matched_reference_layer), top_gate_mean, gate_entropy_mean, gate_entropy_uniform,
    majority_head_share."""
    gates = _gates(profile, rows)
    component = torch.tensor([int(r.get("component", 0)) for r in rows])
    usage = {components[c]: gates[component == c].mean(0).tolist() for c in component.unique().tolist()}
    averaged = routing_mutual_information(component.tolist(), gates.mean(1).argmax(-1).tolist())
    return {"layers": profile["layers"], "usage_by_component": usage, **averaged,
            **layer_nmi(gates, component), **gate_strength(gates, component)}


def layer_nmi(gates, components: Sequence[int]) -> dict:
    """NMI between the components and each layer's top head, its mean and maximum over layers, and the NMI after
    matching heads across layers (module docstring). gates: (rows, layers, heads)."""
    gates, components = _as_array(gates), np.asarray(components).ravel()
    per_layer = [routing_mutual_information(components, gates[:, layer].argmax(-1))["nmi"]
                 for layer in range(gates.shape[1])]
    reference = int(np.argmax(per_layer))
    matched = match_heads(gates, reference)
    return {"nmi_per_layer": per_layer, "nmi_layer_mean": float(np.mean(per_layer)),
            "nmi_layer_max": float(np.max(per_layer)), "matched_reference_layer": reference,
            "nmi_matched": routing_mutual_information(components, matched.mean(1).argmax(-1))["nmi"]}


def match_heads(gates, reference: int = 0) -> np.ndarray:
    """The gates with every layer's heads permuted onto those of layer `reference`: head j of a layer becomes the
    reference head it is used with most, by the same rows (the Hungarian algorithm, scipy's
    linear_sum_assignment, maximising the summed products of the two layers' gate weights over rows)."""
    gates = _as_array(gates)
    if not 0 <= reference < gates.shape[1]:
        raise ValueError(f"reference layer must lie in 0..{gates.shape[1] - 1}, got reference={reference!r}")
    matched = gates.copy()
    for layer in set(range(gates.shape[1])) - {reference}:
        co_use = gates[:, reference].T @ gates[:, layer]  # (reference heads, this layer's heads)
        reference_heads, heads = linear_sum_assignment(co_use, maximize=True)
        matched[:, layer, reference_heads] = gates[:, layer, heads]
    return matched


def gate_strength(gates, components: Sequence[int]) -> dict:
    """top_gate_mean, gate_entropy_mean (nats), gate_entropy_uniform (log N) and majority_head_share (module
    docstring) of gates (rows, layers, heads) for rows of the given components."""
    gates, components = _as_array(gates), np.asarray(components).ravel()
    if len(components) != gates.shape[0]:
        raise ValueError(f"need one component per row: {len(components)} components for {gates.shape[0]} rows")
    n_heads = gates.shape[-1]
    p = np.clip(gates, 0.0, None)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)  # 0 log 0 = 0
    top = gates.argmax(-1)  # (rows, layers)
    ordered = np.sort(gates, axis=-1)
    # a gate without a single largest weight (e.g. uniform) has no top head: it counts as missing its component's
    unique_top = ordered[..., -1] > ordered[..., -2] if n_heads > 1 else np.ones(top.shape, dtype=bool)
    majority = np.zeros(top.shape, dtype=bool)
    for c in np.unique(components):
        mine = components == c
        for layer in range(top.shape[1]):
            chosen = top[mine, layer][unique_top[mine, layer]]
            if chosen.size:
                head = np.bincount(chosen, minlength=n_heads).argmax()
                majority[mine, layer] = unique_top[mine, layer] & (top[mine, layer] == head)
    return {"top_gate_mean": float(gates.max(-1).mean()), "gate_entropy_mean": float(entropy.mean()),
            "gate_entropy_uniform": float(np.log(n_heads)), "majority_head_share": float(majority.mean())}


def _gates(profile: dict, rows: Sequence[dict]) -> torch.Tensor:
    gates = torch.as_tensor(profile["gates"]).float()
    if gates.dim() != 3 or gates.shape[0] != len(rows) or gates.shape[0] == 0:
        raise ValueError(f"a gate profile holds (rows, layers, heads) gates for every row; got shape "
                         f"{tuple(gates.shape)} for {len(rows)} rows")
    return gates


def _as_array(gates) -> np.ndarray:
    array = gates.detach().cpu().numpy() if isinstance(gates, torch.Tensor) else np.asarray(gates)
    if array.ndim != 3 or array.shape[0] == 0:
        raise ValueError(f"gates must be a non-empty (rows, layers, heads) array, got shape {array.shape}")
    return array.astype(np.float64)
