"""build/<profile>/book/html/: a static site of a suite run, readable offline (`make book`).

    python -m hydralib.book --profile default        # after `make suite`, or after `store import` of a pack

The executed notebooks of build/<profile>/ are its chapters, outputs as they ran (nothing is executed again),
and the suite's report (report.html with the notebook pages it links) is a page of it. Built by Sphinx with
myst-nb and sphinx-book-theme, the Sphinx stack that Jupyter Book 1 is made of, all installed from PyPI and
working without a network once installed. Jupyter Book 2 (mystmd) was not chosen: its HTML build downloads
its site theme from the network when it runs. Equations are typeset by MathJax 2 from jupyter-server-mathjax,
copied into the site; widgets are drawn as static HTML from their saved state (report_page.static_widgets);
no page loads anything from the network.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from .report_page import MATHJAX_URL, REPORT_NAME, shown_path, static_widgets, vendor_mathjax

BUILD_DIR = Path(__file__).resolve().parents[1] / "build"
BOOK_DIR = "book"

CONF = '''# Written by hydralib.book for this build; edit hydralib/book.py instead.
project = "HydraLoRA Lab"
author = "HydraLoRA Lab"
extensions = ["myst_nb"]
nb_execution_mode = "off"              # the suite's outputs, as they ran
nb_ipywidgets_js = {{}}                # no widget manager from a CDN: widgets are static HTML already
myst_enable_extensions = ["dollarmath", "amsmath"]
mathjax_path = "{mathjax}"             # under _static: the local MathJax 2
# the fonts the package ships; the theme marks its pages tex2jax_ignore, so math is processed by class
mathjax2_config = {{"HTML-CSS": {{"availableFonts": [], "webFont": "STIX-Web"}},
                   "tex2jax": {{"processClass": "tex2jax_process|mathjax_process|math|output_area"}}}}
html_theme = "sphinx_book_theme"
html_title = "HydraLoRA Lab: {profile}"
html_static_path = ["_static"]
html_extra_path = ["report"]
html_copy_source = False
html_theme_options = {{"use_download_button": False, "use_fullscreen_button": False}}
exclude_patterns = ["_build", "report"]
suppress_warnings = ["mystnb.unknown_mime_type", "myst.header"]
'''

INDEX = '''# HydraLoRA Lab: the `{profile}` run

The notebooks as the suite executed them on the `{profile}` profile, with every output as it ran, and the
suite's <a href="{report}">report</a> (run times, parameters, every figure and the claims table). Readable offline.

```{{toctree}}
:maxdepth: 1
:caption: Notebooks

{chapters}
```
'''


def build_book(profile: str, build_dir: Path = BUILD_DIR, quiet: bool = True) -> Path:
    """Build the site of build_dir/<profile>/'s executed notebooks and report into build_dir/<profile>/book/html/;
    returns its index.html. ValueError where there are no executed notebooks; RuntimeError if Sphinx fails."""
    run_dir = Path(build_dir) / profile
    notebooks = sorted(run_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"no executed notebooks in {shown_path(run_dir, run_dir)} for profile {profile!r}: run the "
                         f"suite (python -m hydralib suite --profile {profile}) or import a results pack first "
                         "(python -m hydralib store import PACK)")
    book = run_dir / BOOK_DIR
    source, site = book / "source", book / "html"
    shutil.rmtree(book, ignore_errors=True)
    source.mkdir(parents=True)
    for notebook in notebooks:
        nb = static_widgets(nbformat.read(notebook, as_version=4))
        nb.metadata.pop("papermill", None)  # where it ran on the suite's machine: not the reader's business
        nbformat.write(nb, source / notebook.name)
    report = source / "report"
    report.mkdir()
    if (run_dir / REPORT_NAME).exists():
        shutil.copy2(run_dir / REPORT_NAME, report / REPORT_NAME)
        if (run_dir / "html").is_dir():
            shutil.copytree(run_dir / "html", report / "html")
        for notebook in notebooks:  # the report links each executed .ipynb beside it
            shutil.copy2(source / notebook.name, report / notebook.name)
    vendor_mathjax(source / "_static")
    (source / "conf.py").write_text(CONF.format(mathjax=MATHJAX_URL, profile=profile))
    (source / "index.md").write_text(INDEX.format(
        profile=profile, chapters="\n".join(nb.stem for nb in notebooks),
        report=REPORT_NAME if (report / REPORT_NAME).exists() else "#"))
    result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", *(["-q"] if quiet else []),
                             str(source), str(site)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"Sphinx could not build the book (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return site / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hydralib.book", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="the suite profile whose run to publish")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="the suite's build folder (default: build/)")
    args = parser.parse_args(argv)
    try:
        index = build_book(args.profile, args.build_dir, quiet=False)
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"the book: {index} (open it in a browser; it needs no network)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
