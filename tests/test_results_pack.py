"""Results packs: a suite's runs, claims, figures and executed notebooks exported as one archive, imported into
another clone's store (where a notebook then finds its runs without training), refused when built on other code."""
import io
import json
import tarfile

import nbformat
import pytest

import hydralib.results_pack as results_pack
from hydralib.__main__ import main
from hydralib.results_pack import PackRefused, export_pack, import_pack, read_manifest
from hydralib.specs import synthetic_spec
from hydralib.store import RunStore


def clone(root):
    """A clone's notebooks folder: one notebook given a store, claims and figures folder by profile `p`."""
    notebooks = root / "notebooks"
    (notebooks / "profiles").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("store_dir = 'x'\nclaims_dir = 'x'\nfigures_dir = 'x'",
                                          metadata={"tags": ["parameters"]})]
    nb.metadata = {"kernelspec": {"name": "hydralib", "display_name": "HydraLoRA Lab", "language": "python"}}
    nbformat.write(nb, notebooks / "03_x.ipynb")
    (notebooks / "profiles" / "p.yaml").write_text(
        "common:\n  figures_dir: ../figures\n  store_dir: ../build/p/run_store\n  claims_dir: ../build/p/claims\n")
    return notebooks


SPEC = synthetic_spec(None, 0, n_components=2, steps=1, lr=1e-3, pretrain_steps=0, n_train=4, n_test=2)


@pytest.fixture
def suite_output(tmp_path):
    """What a suite run of profile p left in a clone: one finished run, a verdict, a figure, an executed notebook."""
    notebooks = clone(tmp_path / "a")
    build = tmp_path / "a" / "build"
    store = RunStore(build / "p" / "run_store")
    store.path(SPEC).mkdir()
    (store.path(SPEC) / "adapter.safetensors").write_bytes(b"\0weights")
    store._finish(store.path(SPEC), {"exact_match": 0.5})
    (build / "p" / "run_store" / (SPEC.key + ".lock")).write_text("")
    (build / "p" / "claims").mkdir()
    (build / "p" / "claims" / "verdicts.jsonl").write_text('{"claim": "a"}\n')
    (tmp_path / "a" / "figures").mkdir()
    (tmp_path / "a" / "figures" / "03_methods.png").write_bytes(b"png")
    (build / "p" / "03_x.ipynb").write_text("{}")
    (build / "p" / "timings.json").write_text('{"03_x": 1.0}')
    return notebooks, build


def test_a_pack_round_trip_gives_another_clone_the_runs_without_training(suite_output, tmp_path):
    notebooks, build = suite_output
    pack = export_pack("p", build_dir=build, notebook_dir=notebooks, profile_dir=notebooks / "profiles")
    assert pack == build / "p-results.tar.gz"
    manifest = read_manifest(pack)
    assert manifest["profile"] == "p" and manifest["code_key"] == results_pack.code_version()
    assert sorted(manifest["files"]) == sorted([
        f"build/p/run_store/{SPEC.key}/adapter.safetensors", f"build/p/run_store/{SPEC.key}/results.json",
        f"build/p/run_store/{SPEC.key}/done.json", "build/p/claims/verdicts.jsonl", "figures/03_methods.png",
        "build/p/03_x.ipynb", "build/p/timings.json"])  # no lock file: a lock belongs to the machine that took it
    assert manifest["folders"]["store"] == ["build/p/run_store"]

    other = clone(tmp_path / "b")
    assert RunStore(tmp_path / "b" / "build" / "p" / "run_store").get(SPEC) is None  # before: it would train
    import_pack(pack, build_dir=tmp_path / "b" / "build", notebook_dir=other)
    assert RunStore(tmp_path / "b" / "build" / "p" / "run_store").get(SPEC) == {"exact_match": 0.5}
    assert (tmp_path / "b" / "figures" / "03_methods.png").read_bytes() == b"png"
    assert (tmp_path / "b" / "build" / "p" / "claims" / "verdicts.jsonl").read_text() == '{"claim": "a"}\n'
    assert not [p for p in (tmp_path / "b" / "build").iterdir() if p.name != "p"]  # no staging folder left


def test_a_pack_built_on_other_code_is_refused_saying_which(suite_output, tmp_path, monkeypatch):
    notebooks, build = suite_output
    pack = export_pack("p", build_dir=build, notebook_dir=notebooks, profile_dir=notebooks / "profiles")
    built_on = read_manifest(pack)["code_key"]
    monkeypatch.setattr(results_pack, "code_version", lambda: "0123456789ab")
    other = clone(tmp_path / "b")
    with pytest.raises(PackRefused, match=f"built on other code: its runs have code key {built_on}.*"
                                          "this lab's code key is 0123456789ab"):
        import_pack(pack, build_dir=tmp_path / "b" / "build", notebook_dir=other)
    assert not (tmp_path / "b" / "build" / "p").exists() and not (tmp_path / "b" / "figures").exists()


def test_a_damaged_pack_is_refused_before_anything_is_written(suite_output, tmp_path):
    notebooks, build = suite_output
    pack = export_pack("p", build_dir=build, notebook_dir=notebooks, profile_dir=notebooks / "profiles")
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(pack) as source, tarfile.open(damaged, "w:gz") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name == "figures/03_methods.png":
                data = b"PNG"
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    other = clone(tmp_path / "b")
    with pytest.raises(PackRefused, match="damaged: figures/03_methods.png does not match its checksum"):
        import_pack(damaged, build_dir=tmp_path / "b" / "build", notebook_dir=other)
    assert not (tmp_path / "b" / "build" / "p").exists() and not (tmp_path / "b" / "figures").exists()


def test_the_store_command_says_what_is_missing(tmp_path, capsys):
    assert main(["store", "export", "--profile", "ci", "--build-dir", str(tmp_path)]) == 2
    assert "profile 'ci' has no finished runs to pack" in capsys.readouterr().err
    (tmp_path / "not-a-pack.tar.gz").write_text("hello")
    assert main(["store", "import", str(tmp_path / "not-a-pack.tar.gz"), "--build-dir", str(tmp_path)]) == 2
    assert "is not a results pack" in capsys.readouterr().err
    manifest = {"format": "other/9"}
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(PackRefused, match="format 'other/9'; this hydralib reads 'hydralib-results-pack/1'"):
        read_manifest(tmp_path / "other.tar.gz")
