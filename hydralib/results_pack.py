"""A results pack: what a suite run of one profile left behind, in one archive a class can share.

    python -m hydralib store export --profile default          # -> build/default-results.tar.gz
    python -m hydralib store import default-results.tar.gz      # into this clone's build/ (and figures/)

A pack holds the profile's run store (every finished run: results, weights, training log, completion record),
its claims folder and figures, and the executed notebooks with their report and timings: the folders the
profile's notebooks are given (store_dir, claims_dir, figures_dir) and build/<profile>/. With it, a notebook
opened in the lab finds its runs and trains nothing. A manifest (manifest.json, the archive's first member)
records the profile, the code key, the commit, and each file's SHA-256.

The code key is the fingerprint of the code that a run's result depends on (the store keys runs by it): a
pack built on other code holds runs this lab would never look up, so import refuses it and names both keys
and the commit the pack was built at. Import checks every file's checksum before it places anything.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from .store import code_version, file_sha256  # the code key, and how the store checksums a file
from .suite import BUILD_DIR, NOTEBOOK_DIR, PROFILE_DIR, _plan_dirs, plan_suite

FORMAT = "hydralib-results-pack/1"
MANIFEST_NAME = "manifest.json"
# build/<profile>/'s own files: the executed notebooks, the report and what it is written from
RUN_FILES = ("[0-9][0-9]_*.ipynb", "suite_report.json", "timings.json", "report.html")
SKIPPED_SUFFIXES = (".lock",)  # the store's lock files: a lock is the taking machine's, never shared


class PackRefused(ValueError):
    """A pack that cannot be imported here (other code, a damaged file, not a pack); str() says why."""


def pack_folders(profile: str, build_dir: Path = BUILD_DIR, notebook_dir: Path = NOTEBOOK_DIR,
                 profile_dir: Path = PROFILE_DIR) -> dict[str, list[Path]]:
    """{"store", "claims", "figures": [folders]} that the profile's notebooks are given, resolved as a suite run
    with this build folder resolves them."""
    plan = plan_suite(profile, notebook_dir=notebook_dir, profile_dir=profile_dir, build_dir=Path(build_dir))
    return {kind: _plan_dirs(plan, f"{kind}_dir", notebook_dir) for kind in ("store", "claims", "figures")}


def _archive_name(path: Path, build_dir: Path, repo_root: Path) -> str:
    """A file's name in the pack: build/<path under the build folder>, else its path in the repository."""
    path = path.resolve()
    for prefix, root in (("build", build_dir.resolve()), ("", repo_root.resolve())):
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            continue
        return f"{prefix}/{rel}" if prefix else rel
    raise ValueError(f"{path} lies outside the build folder ({build_dir}) and the repository ({repo_root}): "
                     "a pack holds only what the suite writes there")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_commit(repo_root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=repo_root)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def export_pack(profile: str, output: Path | None = None, build_dir: Path = BUILD_DIR,
                notebook_dir: Path = NOTEBOOK_DIR, profile_dir: Path = PROFILE_DIR) -> Path:
    """Write the profile's results pack (a .tar.gz) to output (default: <build_dir>/<profile>-results.tar.gz);
    returns its path. Refuses a profile whose run left nothing to pack."""
    build_dir, repo_root = Path(build_dir), Path(notebook_dir).resolve().parent
    folders = pack_folders(profile, build_dir, notebook_dir, profile_dir)
    files = [p for kind in ("store", "claims", "figures") for folder in folders[kind] if folder.is_dir()
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(SKIPPED_SUFFIXES)]
    run_dir = build_dir / profile
    files += sorted({p for pattern in RUN_FILES for p in run_dir.glob(pattern) if p.is_file()})
    if not any(folder.is_dir() and any(folder.iterdir()) for folder in folders["store"]):
        where = ", ".join(str(f) for f in folders["store"]) or f"(profile {profile!r} gives its notebooks no store_dir)"
        raise ValueError(f"profile {profile!r} has no finished runs to pack in {where}; run the suite first: "
                         f"python -m hydralib suite --profile {profile}")
    names = {}
    for path in files:
        names.setdefault(_archive_name(path, build_dir, repo_root), path)  # a folder two notebooks share: once
    manifest = {"format": FORMAT, "profile": profile, "code_key": code_version(), "commit": _git_commit(repo_root),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "folders": {kind: sorted({_archive_name(f, build_dir, repo_root) for f in found})
                            for kind, found in folders.items()},
                "files": {name: file_sha256(path) for name, path in names.items()}}
    output = Path(output) if output is not None else build_dir / f"{profile}-results.tar.gz"
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        data = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for name, path in names.items():
            tar.add(path, arcname=name, recursive=False)
    partial.replace(output)
    return output


def read_manifest(pack: Path) -> dict:
    """The pack's manifest; PackRefused if the file is not a results pack."""
    try:
        with tarfile.open(pack, "r:gz") as tar:
            manifest = json.load(tar.extractfile(MANIFEST_NAME))
    except (OSError, KeyError, ValueError, tarfile.TarError) as err:
        raise PackRefused(f"{pack} is not a results pack ({type(err).__name__}: {err}); "
                          "make one with: python -m hydralib store export --profile PROFILE") from err
    if manifest.get("format") != FORMAT:
        raise PackRefused(f"{pack} is a pack of format {manifest.get('format')!r}; this hydralib reads {FORMAT!r}")
    return manifest


def _target(name: str, build_dir: Path, repo_root: Path) -> Path:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise PackRefused(f"the pack names a file outside its folders: {name!r}")
    if path.parts[0] == "build":
        return build_dir.joinpath(*path.parts[1:])
    return repo_root.joinpath(*path.parts)


def import_pack(pack: Path, build_dir: Path = BUILD_DIR, notebook_dir: Path = NOTEBOOK_DIR) -> dict:
    """Unpack a results pack into this clone: its build/ files under build_dir, the rest (a profile's figures/)
    into the repository. Refuses (PackRefused) a pack built on other code, naming both code keys, and a pack
    whose files do not match their checksums, before anything is written. Returns the manifest."""
    pack, build_dir, repo_root = Path(pack), Path(build_dir), Path(notebook_dir).resolve().parent
    manifest = read_manifest(pack)
    here = code_version()
    if manifest["code_key"] != here:
        commit = manifest.get("commit")
        raise PackRefused(
            f"{pack.name} was built on other code: its runs have code key {manifest['code_key']}"
            + (f" (commit {commit[:12]})" if commit else "") + f", this lab's code key is {here}. Its runs would "
            "never be found here; " + (f"check out commit {commit[:12]} to use it, " if commit else "")
            + f"or run the suite: python -m hydralib suite --profile {manifest['profile']}")
    targets = {name: _target(name, build_dir, repo_root) for name in manifest["files"]}
    build_dir.mkdir(parents=True, exist_ok=True)  # staged beside what it fills: the files then move, not copy
    with tempfile.TemporaryDirectory(dir=build_dir) as scratch, tarfile.open(pack, "r:gz") as tar:
        staged = {}
        for member in tar.getmembers():
            if member.name == MANIFEST_NAME:
                continue
            if member.name not in targets or not member.isfile():
                raise PackRefused(f"{pack.name} holds {member.name!r}, which its manifest does not list")
            data = tar.extractfile(member).read()
            if _sha256(data) != manifest["files"][member.name]:
                raise PackRefused(f"{pack.name} is damaged: {member.name} does not match its checksum")
            staged[member.name] = Path(scratch) / f"{len(staged)}"
            staged[member.name].write_bytes(data)
        missing = sorted(set(targets) - set(staged))
        if missing:
            raise PackRefused(f"{pack.name} is incomplete: {len(missing)} listed file(s) missing, e.g. {missing[0]}")
        for name, source in staged.items():
            targets[name].parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, targets[name])
    return manifest


def store_main(argv: list[str] | None = None) -> int:
    """`python -m hydralib store export|import`: a suite's results as one archive, and back."""
    parser = argparse.ArgumentParser(prog="python -m hydralib store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="{export,import}")
    export = actions.add_parser("export", help="write a profile's run store, claims, figures and executed notebooks "
                                               "as one archive")
    export.add_argument("--profile", default="default", help="the suite profile whose results to pack")
    export.add_argument("--output", type=Path, help="the archive (default: build/<profile>-results.tar.gz)")
    export.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="the suite's build folder (default: build/)")
    unpack = actions.add_parser("import", help="unpack a results pack into this clone (refused if built on other code)")
    unpack.add_argument("pack", type=Path, help="a .tar.gz written by `store export`")
    unpack.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="the suite's build folder (default: build/)")
    args = parser.parse_args(argv)
    try:
        if args.action == "export":
            path = export_pack(args.profile, args.output, args.build_dir)
            manifest = read_manifest(path)
            print(f"{path}: {len(manifest['files'])} files, {path.stat().st_size / 1e6:.1f} MB, profile "
                  f"{manifest['profile']}, code key {manifest['code_key']}")
        else:
            manifest = import_pack(args.pack, args.build_dir)
            folders = sorted({f for found in manifest["folders"].values() for f in found})
            print(f"imported {len(manifest['files'])} files of profile {manifest['profile']} (code key "
                  f"{manifest['code_key']}) into {', '.join(folders)}")
    except ValueError as err:  # PackRefused included
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
