"""Real-data loaders: sizes and known rows on the repository's data/ (or $HYDRALIB_DATA), formats, and errors that say what is wrong."""
import json

import pytest

from hydralib.data import (extract_gsm8k_answer, from_datasets, load_dolly, load_gsm8k, load_humaneval, load_jsonl,
                           load_mmlu, mix_sources, mmlu_subjects)

FIVE = {"instruction", "input", "output", "component", "component_name"}


@pytest.fixture
def real_data(shared_data, monkeypatch):
    monkeypatch.setenv("HYDRALIB_DATA", str(shared_data))
    return shared_data


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_gsm8k(real_data):
    train, test = load_gsm8k("train"), load_gsm8k("test")
    assert (len(train), len(test)) == (7473, 1319)
    first = train[0]
    assert FIVE <= set(first) and first["answer"] == "72" and first["input"] == ""
    assert first["instruction"].startswith("Natalia sold clips to 48 of her friends")
    assert first["output"].endswith("#### 72")
    assert all("," not in r["answer"] for r in train)
    assert extract_gsm8k_answer(first["output"]) == "72"


def test_mmlu(real_data):
    subjects = mmlu_subjects("test")
    assert len(subjects) == 57 and subjects[0] == "abstract_algebra"
    rows = load_mmlu("test", subjects="abstract_algebra")
    assert len(rows) == 100
    first = rows[0]
    assert first["choices"] == ["0", "4", "2", "6"] and first["answer"] == first["output"] == "B"
    assert first["instruction"] == ("Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) "
                                    "over Q.\nA. 0\nB. 4\nC. 2\nD. 6")
    assert (first["component"], first["component_name"], first["subject"]) == (0, "abstract_algebra",
                                                                               "abstract_algebra")
    # A quoted field with commas stays one choice.
    assert rows[2]["choices"] == ["0", "1", "0,1", "0,4"] and rows[2]["answer"] == "D"
    dev = load_mmlu("dev")
    assert len(dev) == 5 * 57 and len({r["component"] for r in dev}) == 57


def test_humaneval():
    rows = load_humaneval()
    assert len(rows) == 164 and len({r["task_id"] for r in rows}) == 164
    first = rows[0]
    assert FIVE <= set(first) and first["task_id"] == "HumanEval/0"
    assert first["entry_point"] == "has_close_elements" and first["instruction"] == first["prompt"]
    assert "def check(candidate)" in first["test"] and first["output"].strip()


def test_dolly_format(tmp_path):
    path = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Name a fruit.", "context": "", "response": "Apple.", "category": "open_qa"},
        {"instruction": "Summarise.", "context": "A long text.", "response": "Short.", "category": "summarization"},
        {"instruction": "Name a colour.", "context": "", "response": "Red.", "category": "open_qa"},
    ])
    rows = load_dolly(path)
    assert [(r["component"], r["component_name"]) for r in rows] == [(0, "open_qa"), (1, "summarization"),
                                                                     (0, "open_qa")]
    assert rows[1]["input"] == "A long text." and rows[1]["output"] == "Short." and FIVE <= set(rows[1])


def test_jsonl_and_datasets_without_category(tmp_path):
    records = [{"instruction": "add", "input": "1 2", "output": "3"}, {"instruction": "say hi", "output": "hi"}]
    for rows in (load_jsonl(write_jsonl(tmp_path / "x.jsonl", records)), from_datasets(records)):
        assert [(r["input"], r["component"], r["component_name"]) for r in rows] == [("1 2", 0, "all"),
                                                                                     ("", 0, "all")]
    datasets = pytest.importorskip("datasets")
    rows = from_datasets(datasets.Dataset.from_list([{"q": "a", "a": "b", "c": "x"}, {"q": "c", "a": "d", "c": "w"}]),
                         instruction_key="q", output_key="a", category_key="c")
    assert [(r["instruction"], r["output"], r["component"], r["component_name"]) for r in rows] == [
        ("a", "b", 1, "x"), ("c", "d", 0, "w")]


def test_missing_field_names_row_field_and_file(tmp_path):
    path = tmp_path / "dolly.jsonl"
    path.write_text(json.dumps({"instruction": "a", "context": "", "response": "b", "category": "c"}) + "\n\n"
                    + json.dumps({"instruction": "a", "context": "", "category": "c"}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}, row 3 is missing the field 'response'"):
        load_dolly(path)
    with pytest.raises(ValueError, match="dataset row 2 is missing the field 'output'"):
        from_datasets([{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    write_jsonl(data / "gsm8k" / "test.jsonl", [{"question": "q", "answer": "#### 1"}, {"answer": "#### 2"}])
    (data / "mmlu" / "dev").mkdir(parents=True)
    (data / "mmlu" / "dev" / "toy_dev.csv").write_text('"q, with comma",1,2,3,4,A\n"q2\nspans lines",1,2,3,4\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYDRALIB_DATA", str(data))
        with pytest.raises(ValueError, match="row 2 is missing the field 'question'"):
            load_gsm8k("test")
        with pytest.raises(ValueError, match=r"toy_dev\.csv, row 2 \(ending at line 3\) is missing the field 'answer'"):
            load_mmlu("dev")


def test_missing_file_names_file_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        load_gsm8k("train")
    message = str(error.value)
    assert str(tmp_path / "gsm8k" / "train.jsonl") in message and "HYDRALIB_DATA" in message
    assert "openai/gsm8k" in message
    with pytest.raises(FileNotFoundError, match="HYDRALIB_DATA") as error:
        load_mmlu("test")
    assert str(tmp_path / "mmlu" / "test") in str(error.value) and "hendrycks/test" in str(error.value)
    with pytest.raises(FileNotFoundError, match="databricks-dolly-15k"):
        load_dolly()
    with pytest.raises(ValueError, match="split='validation'"):
        load_gsm8k("validation")


def test_mix_sources_labels_components_by_source():
    def rows(name, n, components=1):
        return [{"instruction": f"{name}{i}", "input": "", "output": "o", "component": i % components,
                 "component_name": f"{name}-{i % components}"} for i in range(n)]
    sources = {"math": rows("m", 10), "code": rows("c", 6, components=2)}
    mixed = mix_sources(sources, seed=1)
    assert len(mixed) == 16 and mixed == mix_sources(sources, seed=1) and mixed != mix_sources(sources, seed=2)
    for row in mixed:
        assert (row["component"], row["component_name"]) == ((0, "math") if row["instruction"][0] == "m"
                                                             else (1, "code"))
    assert {r["subcomponent_name"] for r in mixed if r["component"] == 1} == {"c-0", "c-1"}
    sampled = mix_sources(sources, n_per_source=4)
    assert sorted(r["component"] for r in sampled) == [0] * 4 + [1] * 4
    with pytest.raises(ValueError, match="'code' has 6 rows, fewer than n_per_source=8"):
        mix_sources(sources, n_per_source=8)
    with pytest.raises(ValueError, match="source 'bad', row 1 is missing the field 'output'"):
        mix_sources({"bad": [{"instruction": "x", "input": "", "component": 0, "component_name": "a"}]})


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("She pays $18.00 in total.", "18"),
    ("First 3 apples, then 5 more, so 8 apples.", "8"),
    ("The loss is -12 dollars", "-12"),
    ("1,000,000 grains #### none here", "1000000"),
    ("I do not know.", None),
])
def test_extract_gsm8k_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


def test_a_clone_finds_its_own_data_folder(monkeypatch):
    """Without HYDRALIB_DATA the loaders read the repository's data/, which the clone carries (not ignored)."""
    import subprocess
    from pathlib import Path

    from hydralib.data.sources import data_dir
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("HYDRALIB_DATA", raising=False)
    assert data_dir() == repo / "data"
    if not (repo / "data" / "gsm8k" / "train.jsonl").is_file():
        pytest.skip("data/ holds no GSM8K file in this checkout")
    assert len(load_gsm8k("test")) == 1319 and len(mmlu_subjects("test")) == 57
    files = ["data/gsm8k/train.jsonl", "data/gsm8k/LICENSE", "data/mmlu/test/anatomy_test.csv", "data/mmlu/LICENSE"]
    ignored = subprocess.run(["git", "check-ignore", *files], cwd=repo, capture_output=True, text=True)
    assert ignored.stdout == "", f"git ignores data files a clone needs: {ignored.stdout}"
    monkeypatch.setenv("HYDRALIB_DATA", "/elsewhere")
    assert data_dir() == Path("/elsewhere")


def test_a_non_utf8_line_is_named_by_file_and_row_and_an_empty_file_is_refused(tmp_path):
    from hydralib.data import load_jsonl
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "\xff", "output": "c"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, row 2: not UTF-8"):
        load_jsonl(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.jsonl holds no records"):
        load_jsonl(empty)


def _gsm8k_folder(tmp_path, monkeypatch, text: bytes):
    (tmp_path / "gsm8k").mkdir(parents=True, exist_ok=True)
    (tmp_path / "gsm8k" / "test.jsonl").write_bytes(text)
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))


GOOD = b'{"question": "q", "answer": "work\\n#### 1,200"}\n'


@pytest.mark.parametrize("line, message", [
    (b'{"question": "q", "answer": "work\\n####"}', r"row 2: field 'answer' must end in '#### <number>', but after "
                                                   r"'####' it has nothing"),
    (b'{"question": "q", "answer": "#### many"}', r"row 2: field 'answer' must end in .* it has 'many'"),
    (b'{"question": "q", "answer": 42}', r"row 2: field 'answer' must be text, got int 42"),
    (b'{"question": 7, "answer": "#### 7"}', r"row 2: field 'question' must be text, got int 7"),
    (b'{"question": ' + b"[" * 100_000 + b"]" * 100_000 + b', "answer": "#### 1"}',
     r"row 2: JSON nested too deeply to read"),
    (b'{"question": "q", "answer": "#### 1", "id": ' + b"9" * 5000 + b"}",
     r"row 2: a value JSON cannot be read into \(Exceeds the limit"),
])
def test_hostile_gsm8k_rows_are_named_by_file_row_and_field(tmp_path, monkeypatch, line, message):
    _gsm8k_folder(tmp_path, monkeypatch, GOOD + line + b"\n")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'gsm8k' / 'test.jsonl'}, {message}"):
        load_gsm8k("test")


def test_a_jsonl_file_with_a_byte_order_mark_loads(tmp_path, monkeypatch):
    _gsm8k_folder(tmp_path, monkeypatch, b"\xef\xbb\xbf" + GOOD + GOOD)
    assert [r["answer"] for r in load_gsm8k("test")] == ["1200", "1200"]
    path = tmp_path / "mine.jsonl"
    path.write_bytes("\ufeff".encode() + b'{"instruction": "a", "output": "b"}\n')
    assert load_jsonl(path)[0]["instruction"] == "a"


@pytest.mark.parametrize("record, message", [
    ({"instruction": 5, "output": "b"}, r"row 1: field 'instruction' must be text, got int 5"),
    ({"instruction": "a", "output": ["b", "c"]}, r"row 1: field 'output' must be text, got list \['b', 'c'\]"),
    ({"instruction": "a", "input": {"x": 1}, "output": "b"}, r"row 1: field 'input' must be text, got dict"),
    ({"instruction": "a", "output": "b", "category": [1]}, r"row 1: field 'category' must be text or an integer"),
])
def test_jsonl_fields_of_another_type_are_named(tmp_path, record, message):
    path = tmp_path / "mine.jsonl"
    write_jsonl(path, [record])
    with pytest.raises(ValueError, match=rf"{path}, {message}"):
        load_jsonl(path)
    with pytest.raises(ValueError, match=rf"dataset {message}"):
        from_datasets([record])


def test_a_latin1_mmlu_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "mmlu" / "dev").mkdir(parents=True)
    (tmp_path / "mmlu" / "dev" / "toy_dev.csv").write_bytes("q1,a,b,c,d,A\nq2 caf\xe9,a,b,c,d,B\n".encode("latin-1"))
    monkeypatch.setenv("HYDRALIB_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"toy_dev\.csv, after line \d+: not UTF-8 text"):
        load_mmlu("dev")
