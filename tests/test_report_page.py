"""report.html on a fake build folder: one offline page with figures embedded, claims, times, environment."""
import base64
import json
import re

import nbformat

from hydralib.report_page import markdown_to_html, write_report

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_the_report_embeds_figures_and_links_the_rest(tmp_path):
    out, figures = tmp_path / "build" / "p", tmp_path / "figures"
    out.mkdir(parents=True)
    figures.mkdir()
    (figures / "a.png").write_bytes(PNG)
    (figures / "b.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (figures / "c.html").write_text("<html>plotly</html>")
    (figures / "plotly.min.js").write_text("//")
    claims = figures / "claims.md"
    claims.write_text("# Claims\n\nSome *text*.\n\n| notebook | claim | verdict |\n|---|---|---|\n| 01_x | a <b> | held |\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("print(1)", execution_count=1)]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n"),
                           nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode()})]
    nbformat.write(nb, out / "01_x.ipynb")
    (out / "suite_report.json").write_text(json.dumps([{"notebook": "01_x.ipynb", "seconds": 12.5, "status": "ok"}]))
    (out / "timings.json").write_text(json.dumps({"01_x": 12.5}))
    profile = tmp_path / "p.yaml"
    profile.write_text("common:\n  profile: p\n")
    page = write_report(out, "p", figures_dirs=[figures], claims_path=claims, profile_path=profile,
                        env={"python": "3.x", "torch": "2.y", "device": "cpu", "cpu count": 2})
    text = page.read_text()
    assert page == out / "report.html"
    assert "data:image/png;base64," in text and "data:image/svg+xml;base64," in text
    assert 'href="../../figures/c.html"' in text and "plotly.min.js" not in text
    assert "<table>" in text and "<td>a &lt;b&gt;</td>" in text and '<td class="verdict-held">held</td>' in text
    assert "12.5 s" in text and "profile: p" in text and "2.y" in text
    assert 'href="html/01_x.html"' in text and "src=\"http" not in text  # nothing fetched from the network
    rendered = (out / "html" / "01_x.html").read_text()
    assert "print" in rendered and "data:image/png;base64," in rendered  # nbconvert or the plain renderer


def test_the_plain_markdown_renderer_reads_claims_tables(monkeypatch):
    import hydralib.report_page as rp
    text = "# T\n\nA `code` and **bold**.\n\n| a | b |\n|---|---|\n| 1 | *x* |\n"
    for render in (markdown_to_html, rp._plain_markdown):
        out = render(text)
        assert "<h1>T</h1>" in out and "<code>code</code>" in out and "<strong>bold</strong>" in out
        assert "<th>a</th>" in out and "<td><em>x</em></td>" in out


def test_a_broken_notebook_does_not_lose_the_page(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "00_bad.ipynb").write_text("not json")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Fine")]), out / "01_fine.ipynb")
    page = write_report(out, "p", env={})
    text = page.read_text()
    assert "could not render" in text and 'href="html/01_fine.html"' in text and 'id="environment"' in text


def executed_notebook(path, cells, end_time=None, widgets=None):
    nb = nbformat.v4.new_notebook(cells=cells)
    if end_time:
        nb.metadata["papermill"] = {"end_time": end_time, "input_path": "/home/someone/notebooks/x.ipynb"}
    if widgets:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": widgets, "version_major": 2}}
    nbformat.write(nb, path)


def test_rendered_notebooks_typeset_math_and_draw_widgets_with_no_network(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    bar = nbformat.v4.new_code_cell("for _ in tqdm(range(60)): pass", execution_count=1)
    bar.outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "HBox(children=(HTML(value=''), FloatProgress(value=60.0, max=60.0)))",
        "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2, "version_minor": 0}})]
    state = {"box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_label", "IPY_MODEL_bar"]}},
             "label": {"model_name": "HTMLModel", "state": {"value": "training: 100%"}},
             "bar": {"model_name": "FloatProgressModel", "state": {"value": 60.0, "max": 60.0}}}
    executed_notebook(out / "00_math.ipynb", [nbformat.v4.new_markdown_cell("$$y = W_0 x + B A x$$"), bar],
                      widgets=state)
    write_report(out, "p", env={})
    rendered = (out / "html" / "00_math.html").read_text()
    assert "$$y = W_0 x + B A x$$" in rendered  # the TeX, for MathJax to typeset...
    assert '<script src="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"' in rendered  # ...a local one
    assert (out / "html" / "mathjax" / "MathJax.js").is_file()
    assert (out / "html" / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert re.findall(r'(?:src|href)="https?://', rendered) == []  # nothing fetched: no CDN MathJax, require.js
    assert "require.js" not in rendered and "widget-state+json" not in rendered and "html-manager" not in rendered
    bar = re.search(r"<progress[^>]*>", rendered)
    assert bar and 'value="60.0"' in bar.group() and 'max="60.0"' in bar.group() and "training: 100%" in rendered


def test_a_partial_run_says_what_ran_when_the_rest_last_ran_and_colours_verdicts(tmp_path):
    out, figures = tmp_path / "build" / "p", tmp_path / "figures"
    out.mkdir(parents=True)
    figures.mkdir()
    for name in ("00_quick.png", "01_gap.png"):
        (figures / name).write_bytes(PNG)
    executed_notebook(out / "00_quick.ipynb", [nbformat.v4.new_markdown_cell("# 00")],
                      end_time="2026-12-03T16:20:03.019635+00:00")
    executed_notebook(out / "01_gap.ipynb", [nbformat.v4.new_markdown_cell("# 01")])
    claims = figures / "claims.md"
    claims.write_text("# Claims of the paper, checked by the notebooks\n\nText.\n\n| notebook | claim | verdict |\n"
                      "|---|---|---|\n| 00_quick | a | held |\n| 01_gap | b | not held |\n"
                      "| 01_gap | c | inconclusive |\n"
                      "| 01_gap | d | not run: needs `make suite PROFILE=gpu` |\n")
    page = write_report(out, "p", records=[{"notebook": "01_gap.ipynb", "seconds": 3.0, "status": "ok"}],
                        plan=[(tmp_path / "01_gap.ipynb", {"store_dir": str(out / "run_store"), "steps": 2})],
                        figures_dirs=[figures], claims_path=claims, env={"python": "3.x"})
    text = page.read_text()
    assert "A partial run: it ran 01_gap (1 of 2 notebooks)" in text
    assert re.search(r"not in this run; last ran 2026-12-03 \d\d:\d\d", text)
    assert "00_quick.png <span class=\"older\">(from 00_quick, which last ran 2026-12-03" in text
    assert "01_gap.png</figcaption>" in text  # this run's figure: not marked
    assert "Rows of 00_quick come from their last runs" in text
    assert text.count("Claims of the paper") == 2  # the section heading and its link in the page's navigation
    assert "checked by the notebooks" not in text
    assert '<td class="verdict-held">held</td>' in text and '<td class="verdict-not-held">not held</td>' in text
    assert '<td class="verdict-inconclusive">inconclusive</td>' in text
    assert '<td class="verdict-not-run">not run: needs <code>make suite PROFILE=gpu</code></td>' in text
    assert str(tmp_path) not in text and "/home/someone" not in text  # no machine paths
    assert "<h3>../../figures</h3>" in text and "&quot;store_dir&quot;: &quot;run_store&quot;" in text


def test_a_full_run_is_not_called_partial(tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    executed_notebook(out / "00_quick.ipynb", [nbformat.v4.new_markdown_cell("# 00")])
    text = write_report(out, "p", records=[{"notebook": "00_quick.ipynb", "seconds": 1.0, "status": "ok"}],
                        env={}).read_text()
    assert "partial run" not in text.lower() and "not in this run" not in text
