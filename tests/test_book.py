"""make book: a static site of a suite run (its executed notebooks and report), built for the ci profile from a
small set of executed notebooks, that loads nothing from the network."""
import base64
import re

import nbformat
import pytest

from hydralib.book import build_book, main
from hydralib.report_page import write_report

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def executed(path, title, math=""):
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("plot()", execution_count=1)
    code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode(),
                                                                 "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{math}"), code]
    nb.metadata["kernelspec"] = {"name": "hydralib", "display_name": "HydraLoRA Lab", "language": "python"}
    nb.metadata["papermill"] = {"input_path": "/home/someone/notebooks/x.ipynb"}
    nbformat.write(nb, path)


def network_loads(site) -> dict[str, list[str]]:
    found = {}
    for page in site.rglob("*.html"):
        loads = re.findall(r'<(?:script|link|img|iframe)[^>]*(?:src|href)="(https?://[^"]+)"', page.read_text())
        if loads:
            found[str(page.relative_to(site))] = loads
    return found


@pytest.fixture(scope="module")
def ci_book(tmp_path_factory):
    build = tmp_path_factory.mktemp("build")
    run = build / "ci"
    run.mkdir()
    executed(run / "00_quickstart.ipynb", "00 · Quickstart", "$$y = W_0 x + \\sum_i \\omega_i B_i A x$$")
    executed(run / "03_hydralora_vs_baselines.ipynb", "03 · HydraLoRA against its baselines")
    write_report(run, "ci", records=[{"notebook": "00_quickstart.ipynb", "seconds": 1.0, "status": "ok"},
                                     {"notebook": "03_hydralora_vs_baselines.ipynb", "seconds": 2.0, "status": "ok"}],
                 env={})
    return build, build_book("ci", build)


def test_the_book_has_a_page_per_notebook_and_the_report(ci_book):
    build, index = ci_book
    site = index.parent
    assert index == build / "ci" / "book" / "html" / "index.html"
    text = index.read_text()
    assert "00_quickstart.html" in text and "03_hydralora_vs_baselines.html" in text and 'href="report.html"' in text
    chapter = (site / "00_quickstart.html").read_text()
    assert "00 · Quickstart" in chapter and "<img" in chapter  # the outputs as they ran
    assert (site / "report.html").is_file() and (site / "html" / "00_quickstart.html").is_file()
    assert "/home/someone" not in (site / "00_quickstart.ipynb").read_text()


def test_the_book_loads_nothing_from_the_network(ci_book):
    _, index = ci_book
    site = index.parent
    assert network_loads(site) == {}
    chapter = (site / "00_quickstart.html").read_text()
    mathjax = re.search(r'<script[^>]*src="(_static/mathjax/MathJax\.js[^"]*)"', chapter)
    assert mathjax and (site / "_static" / "mathjax" / "MathJax.js").is_file()  # a local MathJax typesets...
    assert "W_0 x" in chapter  # ...the TeX


def test_a_book_needs_a_suite_run(tmp_path, capsys):
    with pytest.raises(ValueError, match="no executed notebooks .* for profile 'ci': run the suite"):
        build_book("ci", tmp_path)
    assert main(["--profile", "ci", "--build-dir", str(tmp_path)]) == 2
    assert "import a results pack first" in capsys.readouterr().err


def test_the_books_equations_are_typeset_offline_in_chromium(ci_book, tmp_path):
    from test_browser import chromium, require_browser, wait_for
    require_browser()
    _, index = ci_book
    driver = chromium(tmp_path)
    try:
        driver.get((index.parent / "00_quickstart.html").as_uri())
        typeset = wait_for(driver, "return document.querySelectorAll('.MathJax_Display, .MathJax').length", 60,
                           "MathJax to typeset the chapter's equation")
    finally:
        driver.quit()
    assert typeset > 0
