"""A synthetic heterogeneous corpus with known intrinsic components, and primitive tasks to pretrain on.

Every component maps the same input domain (random lowercase words of 3-4 letters by default, at least
one consonant) through its own deterministic string transform, so a sample's component is known and
every answer is exact-match scorable. Rows are short (instruction + input + output < 30 characters)
because the tiny model reads bytes. Words of 3-4 letters (answers of at most 8 characters) put the
default budget's operating point where adapters differ: with 3-6 letters full fine-tuning reached .22
exact match in 150 steps (answers up to 12 bytes, all right or none), with 3-4 it reaches .5-.6 while
LoRA r8 stays near .4 (docs/operating_point.md). The primitive tasks keep words of 3-6 letters.

Two heterogeneity knobs:
- ``n_components``: how many transforms are mixed (the first k of ``SYNTHETIC_COMPONENTS``, so the
  same component means the same task at every level).
- ``conflict``: how little the prompt says which transform is wanted. A row either uses the
  component's own wording (``"rotate left"``) or the shared form ``"?" + cue`` (``"?A"``), where one
  character is all that tells the components apart. Each row independently takes the shared form
  with probability ``conflict`` (0: never, 1: always). Every input word is used once by each
  component, so under the shared form the same prompt (cue aside) asks for k different answers.

One identifiability knob, ``identifiability`` in [0, 1] (default 1: the corpus above, row for row): how
often the instruction names the component. Each row independently keeps its informative instruction
with probability ``identifiability``; otherwise its instruction is drawn without looking at the
component (the shared form gets the cue of a uniformly drawn component, cue noise; the own-wording form
gets one of ``SHARED_WORDINGS``, a paraphrase shared by every component), and the component shows only
in the input, as a one-character marker before the word (``MARKERS[c]``, a digit: ``"3 abc"``). Every
answer stays the component's transform of the word, so rows stay exact-match scorable. What each
routing can see (k components):

- 1: the instruction names the component in every row. Clustering the instruction (or the whole
  prompt) recovers the components exactly, so a cluster gate is the oracle task gate on this data; a
  token router sees the name at the instruction's tokens and, through attention, at later ones; a
  sequence router pools it from the prompt.
- between: a share ``identifiability`` of rows are named by their instruction (a noisy cue in the
  shared form is still right with probability 1/k); the rest carry the marker. Instruction clustering
  groups rows by wording, so it follows the components only on the named rows (its ARI falls with
  the level); whole-prompt clustering also sees the marker, one character against the instruction's
  n-grams; a learned token or sequence router can learn to read either.
- 0: nothing in the instruction tells the components apart (instruction-only clustering is at chance,
  ARI about 0); every row's marker does, so the task stays solvable by a router that learns to read
  the input. Whole-prompt TF-IDF clustering sees the marker only partly: beside the two shared
  wordings (conflict 0) it finds some of the components, but in the shared form a random cue is as
  salient as the marker and the clusters follow the cue.

The draws of the knob come from their own random stream, so one seed gives the same words, components
and row order at every level, and a row anonymised at one level is anonymised at every lower level.
"""
from __future__ import annotations

import functools
import math
import random
import string
from collections import defaultdict
from typing import Callable

VOWELS = frozenset("aeiou")
SHARED_PREFIX = "?"


def _shift(s: str) -> str:
    return "".join(chr((ord(c) - ord("a") + 1) % 26 + ord("a")) for c in s)


# name -> (own wording used when a row is not in the shared form, transform). Canonical order:
# a mixture of k components is the first k. Letter-lookup tasks are "hard" for the tiny model
# (they sit at its learning threshold and make results noisy), so there is only one, and it is last.
_COMPONENTS: dict[str, tuple[str, Callable[[str], str]]] = {
    "rotate_left": ("rotate left", lambda s: s[1:] + s[:1]),
    "reverse_upper": ("reverse in caps", lambda s: s[::-1].upper()),
    "mirror": ("mirror", lambda s: s + s[::-1]),
    "swap_pairs": ("swap pairs", lambda s: "".join(s[i:i + 2][::-1] for i in range(0, len(s), 2))),
    "sort": ("sort letters", lambda s: "".join(sorted(s))),
    "double": ("double letters", lambda s: "".join(c + c for c in s)),
    "alternate_case": ("caps every 2nd", lambda s: "".join(c.upper() if i % 2 else c for i, c in enumerate(s))),
    "drop_vowels": ("drop vowels", lambda s: "".join(c for c in s if c not in VOWELS)),
    "swap_ends": ("swap ends", lambda s: s if len(s) < 2 else s[-1] + s[1:-1] + s[0]),
    "ends_upper": ("caps ends", lambda s: s.upper() if len(s) < 2 else s[0].upper() + s[1:-1] + s[-1].upper()),
    "shift": ("next letter", _shift),
}
SYNTHETIC_COMPONENTS: tuple[str, ...] = tuple(_COMPONENTS)
HARD_COMPONENTS: frozenset[str] = frozenset({"shift"})
# The cue of component i in the shared form "?" + cue.
CUES = string.ascii_uppercase[:len(SYNTHETIC_COMPONENTS)]
# Below identifiability 1: the input marker of component i, and the wordings shared by all components.
MARKERS = (string.digits + "#")[:len(SYNTHETIC_COMPONENTS)]
SHARED_WORDINGS = ("rewrite", "convert")


def _random_word(rng: random.Random, longest: int = 6) -> str:
    while True:  # at least one consonant, so that drop_vowels never answers with nothing
        word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, longest)))
        if set(word) - VOWELS:
            return word


def _random_letters(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 12)))


def _random_digits(rng: random.Random) -> str:
    return "".join(rng.choice(string.digits) for _ in range(rng.randint(3, 8)))


# name -> (instruction, input sampler, transform); used to pretrain the tiny base model.
_PRIMITIVES: dict[str, tuple[str, Callable[[random.Random], str], Callable[[str], str]]] = {
    "copy": ("copy", _random_word, lambda s: s),
    "uppercase": ("uppercase", _random_word, str.upper),
    "reverse": ("reverse", _random_word, lambda s: s[::-1]),
    "duplicate": ("duplicate", _random_word, lambda s: s + s),
    "drop_first": ("drop first", _random_word, lambda s: s[1:]),
    "length": ("length", _random_letters, lambda s: str(len(s))),
    "sort_digits": ("sort digits", _random_digits, lambda s: "".join(sorted(s))),
}
PRIMITIVE_TASKS: tuple[str, ...] = tuple(_PRIMITIVES)


def apply_component(name: str, text: str) -> str:
    """The exact answer of component ``name`` for input ``text``.

    Refuses an unknown component name and a text that is not a non-empty lowercase a-z word.
    """
    if name not in _COMPONENTS:
        raise ValueError(f"unknown component {name!r}; allowed: {', '.join(SYNTHETIC_COMPONENTS)}")
    if not text or not set(text) <= set(string.ascii_lowercase):
        raise ValueError(f"component inputs are non-empty lowercase a-z words, got {text!r}")
    return _COMPONENTS[name][1](text)


def make_corpus(n_components: int = 8, conflict: float = 1.0, n_train: int = 2000, n_test: int = 400,
                seed: int = 0, max_word_length: int = 4, identifiability: float = 1.0) -> dict:
    """Train and test rows mixing the first ``n_components`` components.

    Returns ``{"train": rows, "test": rows, "components": names}``; each row is a dict with
    instruction, input, output, component (index into names) and component_name. Rows go round-robin
    over the components (counts differ by at most one) and each input word serves every component
    once (the last word of a split may serve only the first few). Each row independently takes the
    shared instruction ``"?" + cue`` with probability ``conflict``, else the component's own
    wording. Test words never occur in train, so no (instruction, input) pair is in
    both. The same seed gives the same rows; for one seed and n_components, changing ``conflict``
    changes only the instructions. Input words have 3..max_word_length letters. Below
    ``identifiability`` 1, a share of rows get an instruction that says nothing of their component and
    a marker before their word (module docstring; ``input_word`` gives the word back); changing it
    changes only those instructions and inputs. Refuses n_components outside
    1..len(SYNTHETIC_COMPONENTS), conflict or identifiability outside [0, 1], sizes below 1 and
    max_word_length outside 3..12.
    """
    _check_int("n_components", n_components, 1, len(SYNTHETIC_COMPONENTS))
    _check_share("conflict", conflict)
    _check_share("identifiability", identifiability)
    _check_int("n_train", n_train, 1)
    _check_int("n_test", n_test, 1)
    _check_int("max_word_length", max_word_length, 3, 12)
    names = list(SYNTHETIC_COMPONENTS[:n_components])
    rng = random.Random(seed)
    train_groups = math.ceil(n_train / n_components)
    word = functools.partial(_random_word, longest=max_word_length)
    words = _unique_inputs(rng, [word] * (train_groups + math.ceil(n_test / n_components)))
    # its own stream: the main one (words, forms, order) is the same at every level, and untouched at 1
    anonymity = random.Random(f"identifiability-{seed}") if identifiability < 1 else None
    return {"train": _component_rows(rng, names, words[:train_groups], n_train, conflict, identifiability, anonymity),
            "test": _component_rows(rng, names, words[train_groups:], n_test, conflict, identifiability, anonymity),
            "components": names}


def _component_rows(rng: random.Random, names: list[str], words: list[str], n: int, conflict: float,
                    identifiability: float, anonymity: random.Random | None) -> list[dict]:
    rows = []
    for i in range(n):
        c, word = i % len(names), words[i // len(names)]
        shared = rng.random() < conflict  # random() < 1 always and < 0 never: the ends are exact
        instruction = SHARED_PREFIX + CUES[c] if shared else _COMPONENTS[names[c]][0]
        text = word
        if anonymity is not None:
            # drawn for every row, so a row anonymised at one level is anonymised, alike, at every lower one
            named = anonymity.random() < identifiability
            other, wording = anonymity.randrange(len(names)), anonymity.choice(SHARED_WORDINGS)
            if not named:
                instruction = SHARED_PREFIX + CUES[other] if shared else wording
                text = MARKERS[c] + " " + word
        rows.append(_row(instruction, text, apply_component(names[c], word), c, names[c]))
    rng.shuffle(rows)
    return rows


def input_word(row: dict) -> str:
    """The word a component row transforms: its input without the component marker some rows carry
    below identifiability 1."""
    text = row["input"]
    return text[2:] if text[:1] in MARKERS else text


def make_primitive_corpus(n_train: int = 2000, n_test: int = 200, seed: int = 0) -> dict:
    """Rows of the primitive tasks (``PRIMITIVE_TASKS``), to pretrain the tiny base model.

    Same shape as ``make_corpus``: component = index of the task in PRIMITIVE_TASKS, instruction =
    the task's name, tasks round-robin. No input occurs in both splits. Refuses sizes below 1.
    """
    _check_int("n_train", n_train, 1)
    _check_int("n_test", n_test, 1)
    rng = random.Random(seed)
    tasks = [PRIMITIVE_TASKS[i % len(PRIMITIVE_TASKS)] for i in range(n_train + n_test)]
    inputs = _unique_inputs(rng, [_PRIMITIVES[t][1] for t in tasks])
    rows = []
    for task, text in zip(tasks, inputs):
        instruction, _, transform = _PRIMITIVES[task]
        rows.append(_row(instruction, text, transform(text), PRIMITIVE_TASKS.index(task), task))
    train, test = rows[:n_train], rows[n_train:]
    rng.shuffle(train)
    rng.shuffle(test)
    return {"train": train, "test": test, "components": list(PRIMITIVE_TASKS)}


def prompt_form(row: dict) -> str:
    """The row's instruction with the cue removed: ``"?"`` for the shared form, else the wording."""
    instruction = row["instruction"]
    return SHARED_PREFIX if len(instruction) == 2 and instruction[0] == SHARED_PREFIX else instruction


def conflict_statistics(rows: list[dict]) -> dict:
    """Measure both heterogeneity knobs on a list of rows.

    Returns rows, components (distinct ids), instructions (distinct instruction strings),
    shared_form_fraction (rows whose instruction is "?" + cue), targets_per_input (distinct outputs
    per input word, averaged over words: grows with the number of components) and
    targets_per_prompt_form (distinct outputs per (cue-free instruction, input), averaged: 1 when
    every component has its own wording, up to targets_per_input when only the cue differs).
    """
    by_input, by_form = defaultdict(set), defaultdict(set)
    for row in rows:
        by_input[input_word(row)].add(row["output"])
        by_form[prompt_form(row), row["input"]].add(row["output"])
    shared = sum(prompt_form(row) == SHARED_PREFIX for row in rows)
    return {"rows": len(rows),
            "components": len({row["component"] for row in rows}),
            "instructions": len({row["instruction"] for row in rows}),
            "shared_form_fraction": shared / len(rows) if rows else 0.0,
            "targets_per_input": _mean_size(by_input),
            "targets_per_prompt_form": _mean_size(by_form)}


def _mean_size(groups: dict) -> float:
    return sum(map(len, groups.values())) / len(groups) if groups else 0.0


def _row(instruction: str, text: str, output: str, component: int, name: str) -> dict:
    return {"instruction": instruction, "input": text, "output": output, "component": component,
            "component_name": name}


def _unique_inputs(rng: random.Random, samplers: list[Callable[[random.Random], str]]) -> list[str]:
    """One new input per sampler, all distinct (this is what keeps train and test apart)."""
    seen, out = set(), []
    for sampler in samplers:
        for _ in range(1000):
            text = sampler(rng)
            if text not in seen:
                break
        else:
            raise ValueError(f"could not draw {len(samplers)} distinct inputs; ask for fewer rows")
        seen.add(text)
        out.append(text)
    return out


def _check_share(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {name}={value!r}")


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer in {allowed}, got {name}={value!r}")
