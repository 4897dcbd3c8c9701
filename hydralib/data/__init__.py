"""Data for the suite: the synthetic corpus with known components, and loaders for real sets."""
from .formatting import IGNORE_INDEX, TEMPLATES, collate, encode_prompt, encode_row, format_prompt
from .sources import (data_dir, extract_gsm8k_answer, from_datasets, load_dolly, load_gsm8k, load_humaneval,
                      load_jsonl, load_mmlu, mix_sources, mmlu_subjects)
from .synthetic import (HARD_COMPONENTS, PRIMITIVE_TASKS, SYNTHETIC_COMPONENTS, apply_component,
                        conflict_statistics, input_word, make_corpus, make_primitive_corpus, prompt_form)

__all__ = [
    "IGNORE_INDEX", "TEMPLATES", "collate", "encode_prompt", "encode_row", "format_prompt", "HARD_COMPONENTS",
    "PRIMITIVE_TASKS", "SYNTHETIC_COMPONENTS", "apply_component", "conflict_statistics", "data_dir",
    "extract_gsm8k_answer", "from_datasets", "input_word", "load_dolly", "load_gsm8k", "load_humaneval", "load_jsonl",
    "load_mmlu", "make_corpus", "make_primitive_corpus", "mix_sources", "mmlu_subjects", "prompt_form"]
