"""report.html on a fake build folder: one offline page with figures embedded, claims, times, environment."""
import base64
import json

import nbformat

from hydralib.report_page import markdown_to_html, render_notebook, write_report

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
    assert "<table>" in text and "<td>a &lt;b&gt;</td>" in text and "<td>held</td>" in text
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
    page = write_report(out, "p", env={})
    assert "could not render" in page.read_text()
    assert render_notebook is not None
