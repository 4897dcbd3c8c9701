"""build/<profile>/report.html: one page of a suite run, readable offline.

Every figure of the profile's figures folder (raster and SVG images embedded as data URIs, plotly HTML
figures linked), the claims table (claims.md rendered), the run times and parameters of each notebook, the
profile, the environment (Python, torch, transformers, device, CPU count), and links to the executed
notebooks rendered as HTML under build/<profile>/html/ (nbconvert when installed, else a plain renderer
here). `python -m hydralib suite` writes it at the end of every run; `python -m hydralib report --profile P`
writes it again from what a run left in build/<profile>/.

Offline: the rendered notebooks typeset their equations with a copy of MathJax 2 from the jupyter-server-mathjax
package (installed from PyPI with the rest), placed beside them; widgets are drawn from the state saved in the
notebook as static HTML (a progress bar as a bar); nothing is loaded from the network. A run of some notebooks
says which ran in it and when the others, whose figures and claims the page also shows, last ran. Paths are
shown relative to the repository (or the page), never as this machine's.
"""
from __future__ import annotations

import base64
import html
import json
import os
import platform
import re
import shutil
import subprocess
import time
from datetime import datetime
from importlib import metadata, resources
from pathlib import Path

import nbformat
import torch

REPORT_NAME = "report.html"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}
LINKED_TYPES = {".html", ".pdf"}
SKIPPED_NAMES = {"plotly.min.js", "claims.md"}
PACKAGES = ("torch", "transformers", "peft", "accelerate", "numpy", "papermill", "nbclient", "ipykernel",
            "matplotlib", "plotly", "nbconvert")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.3em .6em;
vertical-align:top;text-align:left} th{background:#f4f4f4}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;white-space:pre-wrap}
figure{margin:1.5em 0;border:1px solid #eee;padding:.5em} figure img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#555} .ok{color:#176b2c} .failed{color:#b00020} nav a{margin-right:1em}
.cell{margin:1em 0} .prompt{color:#888;font-size:.8em} .err{background:#fdecea}
.older{color:#8a5a00} .partial{background:#fff6e0;border:1px solid #f0d9a0;padding:.5em .8em}
td.verdict-held{background:#e3f4e6;color:#176b2c;font-weight:600} td.verdict-not-held{background:#fdecea;color:#b00020;
font-weight:600} td.verdict-inconclusive{background:#fff6e0;color:#8a5a00} td.verdict-not-run{color:#777}
"""
REPO_ROOT = Path(__file__).resolve().parents[1]
# MathJax 2 from the jupyter-server-mathjax package, copied beside the rendered notebooks (without its
# accessibility explorer and SVG output, which the pages never load)
MATHJAX_PACKAGE = "jupyter_server_mathjax"
MATHJAX_SKIPPED = ("a11y", "SVG")
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
VERDICTS = ("not run", "not held", "inconclusive", "held")  # claims.verdict_of's and claims.NOT_RUN
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


# ---------------------------------------------------------------------------------------------------------
# Markdown: markdown-it-py when installed, else the few things claims.md and notebook text use


def markdown_to_html(text: str) -> str:
    try:
        from markdown_it import MarkdownIt  # optional: comes with jupyterlab's rich; a plain renderer otherwise
        return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    except Exception:  # noqa: BLE001 - fall back to the plain renderer below
        return _plain_markdown(text)


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False)
        s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
        s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", s)
        out.append(s)
    return "".join(out)


def _plain_markdown(text: str) -> str:
    out, para, lines, i = [], [], text.splitlines(), 0

    def flush():
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append("<pre><code>" + html.escape("\n".join(block)) + "</code></pre>")
        elif re.match(r"#{1,6} ", stripped):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            out.append(f"<h{level}>{_inline(stripped[level:].strip())}</h{level}>")
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|?\s*:?-{2,}", lines[i + 1]):
            flush()
            rows = [stripped]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i].strip())
                i += 1
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells[0]) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                                           for row in cells[1:]) + "</tbody></table>")
            continue
        elif re.match(r"[-*] ", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append(lines[i].strip()[2:])
                i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
            continue
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# Notebooks as HTML


def mathjax_folder() -> Path:
    """The MathJax 2 files of the jupyter-server-mathjax package; ImportError naming the package if missing."""
    try:
        folder = Path(str(resources.files(MATHJAX_PACKAGE) / "static"))
    except ModuleNotFoundError as err:
        raise ImportError(f"{MATHJAX_PACKAGE} is not installed: pip install -r requirements.txt (it holds the "
                          "MathJax that typesets the rendered notebooks offline)") from err
    return folder


def vendor_mathjax(folder: Path) -> Path:
    """Copy MathJax into folder/mathjax (once; a copy from another version is replaced); returns that folder."""
    source, target = mathjax_folder(), Path(folder) / "mathjax"
    stamp = target / ".version"
    version = metadata.version(MATHJAX_PACKAGE.replace("_", "-"))
    if stamp.exists() and stamp.read_text() == version:
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*MATHJAX_SKIPPED))
    stamp.write_text(version)
    return target


def render_notebook(notebook: Path, target: Path, mathjax_url: str = MATHJAX_URL) -> str:
    """Write notebook as HTML at target; returns the renderer used ("nbconvert" or "plain").

    nbconvert's page typesets math with the MathJax at mathjax_url (relative to the page: vendor_mathjax puts
    one beside it) and loads nothing from the network: no require.js (only widgets need it, and they are drawn
    here from their saved state, see static_widgets) and no widget manager."""
    nb = static_widgets(nbformat.read(notebook, as_version=4))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        from nbconvert import HTMLExporter  # optional and heavy: a plain renderer otherwise
        no_require = "hydralib:no-require.js"
        body, _ = HTMLExporter(embed_images=True, mathjax_url=mathjax_url,
                               require_js_url=no_require).from_notebook_node(nb)
        body = body.replace(f'<script src="{no_require}"></script>', "")
        target.write_text(body, encoding="utf-8")
        return "nbconvert"
    except ImportError:
        pass
    target.write_text(_plain_notebook_html(nb, notebook.stem), encoding="utf-8")
    return "plain"


def static_widgets(nb):
    """The notebook with each widget output replaced by static HTML drawn from the widget state saved in its
    metadata (boxes, HTML and labels, progress bars as <progress>; any other widget as its description and
    value), or by its text form where no state was saved; the state itself removed (nothing left to load)."""
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).pop(WIDGET_VIEW, None)
            if view is not None and view.get("model_id") in state:
                output["data"]["text/html"] = _widget_html(view["model_id"], state)
    return nb


def _widget_html(model_id: str, state: dict, depth: int = 0) -> str:
    model = state.get(model_id)
    if model is None or depth > 20:
        return ""
    name, values = model.get("model_name", ""), model.get("state", {})
    if name.endswith("BoxModel"):
        children = "".join(_widget_html(child.removeprefix("IPY_MODEL_"), state, depth + 1)
                           for child in values.get("children", []))
        direction = "column" if name.startswith(("VBox", "GridBox")) else "row"
        return f'<div style="display:flex;flex-direction:{direction};gap:.5em;align-items:center">{children}</div>'
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{values.get('value', '')}</span>"  # the widget's own HTML, as the lab shows it
    if name.endswith("ProgressModel"):
        return f'<progress value="{values.get("value", 0)}" max="{values.get("max", 100)}"></progress>'
    text = " ".join(str(values[key]) for key in ("description", "value") if values.get(key) not in (None, ""))
    return f"<span>{html.escape(text)}</span>"


def _output_html(output) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        text = _ANSI.sub("", "".join(output.get("text", "")))
        text = re.sub(r"[^\n]*\r(?!\n)", "", text)  # progress bars: keep each line's last state
        return f"<pre>{html.escape(text)}</pre>"
    if kind == "error":
        return '<pre class="err">' + html.escape(_ANSI.sub("", "\n".join(output.get("traceback", [])))) + "</pre>"
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg", "image/gif"):
        if mime in data:
            payload = "".join(data[mime]).replace("\n", "")
            return f'<img src="data:{mime};base64,{payload}" alt="figure">'
    if "image/svg+xml" in data:
        return "".join(data["image/svg+xml"])
    if "text/html" in data:
        return "<div>" + "".join(data["text/html"]) + "</div>"
    if "text/markdown" in data:
        return markdown_to_html("".join(data["text/markdown"]))
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def _plain_notebook_html(nb, title: str) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(f'<div class="cell">{markdown_to_html(cell.source)}</div>')
        elif cell.cell_type == "code":
            count = cell.get("execution_count")
            parts.append(f'<div class="cell"><div class="prompt">In [{count if count is not None else " "}]:</div>'
                         f"<pre><code>{html.escape(cell.source)}</code></pre>"
                         + "".join(_output_html(o) for o in cell.get("outputs", [])) + "</div>")
    return _page(title, "\n".join(parts))


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


# ---------------------------------------------------------------------------------------------------------
# Environment


def environment() -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu count": os.cpu_count(), "machine": platform.machine()}
    if hasattr(os, "sched_getaffinity"):
        env["CPUs this process may use"] = len(os.sched_getaffinity(0))
    for name in PACKAGES:
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    env["device"] = _device()
    commit = _git_commit()
    if commit:
        env["git commit"] = commit
    return env


def _device() -> str:
    parts = [f"{torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        parts.insert(0, ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        parts.insert(0, "mps")
    else:
        parts.insert(0, "cpu only (no CUDA device)")
    return "; ".join(parts)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "") or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------------------
# The page


def shown_path(path: Path, out_dir: Path) -> str:
    """A path as the page shows it: relative to the repository, else to the page; never this machine's."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, Path(out_dir).resolve())).as_posix()


def last_ran(executed: Path) -> str:
    """When an executed notebook last ran: papermill's end time, else the file's modification time."""
    try:
        end = json.loads(executed.read_text())["metadata"]["papermill"]["end_time"]
        when = datetime.fromisoformat(end).astimezone()
    except (OSError, ValueError, KeyError, TypeError):
        when = datetime.fromtimestamp(executed.stat().st_mtime).astimezone()
    return when.strftime("%Y-%m-%d %H:%M %Z")


def _figure_html(path: Path, out_dir: Path, older: str = "") -> str:
    caption = html.escape(path.name) + (f' <span class="older">({html.escape(older)})</span>' if older else "")
    anchor = html.escape(path.name)
    suffix = path.suffix.lower()
    if suffix in IMAGE_TYPES:
        payload = base64.b64encode(path.read_bytes()).decode("ascii")
        return (f'<figure id="{anchor}"><img src="data:{IMAGE_TYPES[suffix]};base64,{payload}" alt="{anchor}">'
                f"<figcaption>{caption}</figcaption></figure>")
    href = html.escape(Path(os.path.relpath(path, out_dir)).as_posix())
    return (f'<figure id="{anchor}"><a href="{href}">{anchor}</a> (interactive; opens on its own, '
            f"next to the files of its folder)<figcaption>{caption}</figcaption></figure>")


def colour_verdicts(table_html: str) -> str:
    """Each verdict cell of a rendered claims table classed by its outcome (verdict-held, verdict-not-held, ...)."""
    pattern = "|".join(re.escape(v) for v in VERDICTS)
    return re.sub(rf"<td>(({pattern})([;:] (?:(?!</td>).)*)?)</td>",
                  lambda m: f'<td class="verdict-{m.group(2).replace(" ", "-")}">{m.group(1)}</td>', table_html)


def _claims_html(claims_path: Path) -> str:
    """claims.md rendered without its own title (the page's section heading names it once), verdicts coloured."""
    text = Path(claims_path).read_text()
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        text = "\n".join(lines[1:])
    return colour_verdicts(markdown_to_html(text))


def _table(header: list[str], rows: list[list[str]]) -> str:
    return ("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead><tbody>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
            + "</tbody></table>")


def write_report(out_dir: Path, profile_name: str, plan=None, records=None, figures_dirs=(), claims_path=None,
                 profile_path: Path | None = None, env: dict | None = None) -> Path:
    """Write out_dir/report.html (and out_dir/html/<notebook>.html); returns the page's path."""
    out_dir = Path(out_dir)
    if records is None:
        try:
            records = json.loads((out_dir / "suite_report.json").read_text())
        except (OSError, ValueError):
            records = []
    try:
        timings = json.loads((out_dir / "timings.json").read_text())
    except (OSError, ValueError):
        timings = {}
    params = {nb.stem: p for nb, p in plan} if plan else {}
    sections = []

    # Notebooks: which ran in this run, and when the others (whose figures and claims the page shows) last ran.
    rows, renderers = [], set()
    by_name = {r["notebook"]: r for r in records}
    executed_names = sorted(p.name for p in out_dir.glob("[0-9][0-9]_*.ipynb"))
    names = sorted(set(by_name) | set(executed_names))
    older = {Path(name).stem: last_ran(out_dir / name) for name in executed_names if name not in by_name}
    for name in names:
        record = by_name.get(name, {})
        executed = out_dir / name
        link = "not written"
        if executed.exists():
            target = out_dir / "html" / (Path(name).stem + ".html")
            try:
                renderers.add(render_notebook(executed, target))
                link = f'<a href="html/{html.escape(target.name)}">{html.escape(target.name)}</a>'
            except Exception as err:  # noqa: BLE001 - one unreadable notebook must not lose the page
                link = f"could not render: {html.escape(type(err).__name__)}: {html.escape(str(err))[:200]}"
            link += f' · <a href="{html.escape(name)}">.ipynb</a>'
        stem = Path(name).stem
        if stem in older and by_name:
            status_html = f'<span class="older">not in this run; last ran {html.escape(older[stem])}</span>'
        else:
            status = record.get("status", "ok" if executed.exists() else "?")
            status_html = f'<span class="{"ok" if status == "ok" else "failed"}">{html.escape(status)}</span>'
        if record.get("error"):
            status_html += f"<pre>{html.escape(record['error'])}</pre>"
        seconds = record.get("seconds")
        rows.append([html.escape(stem), status_html, "" if seconds is None else f"{seconds:.1f} s",
                     "" if stem not in timings else f"{timings[stem]:.1f} s", link])
    if "nbconvert" in renderers:
        vendor_mathjax(out_dir / "html")
    total = sum(r.get("seconds") or 0 for r in records)
    note = ("" if "plain" not in renderers else
            "<p>Notebooks rendered by hydralib's plain renderer: install nbconvert for the full rendering.</p>")
    partial = ""
    if by_name and older:
        partial = (f'<p class="partial">A partial run: it ran {", ".join(sorted(Path(n).stem for n in by_name))} '
                   f"({len(by_name)} of {len(names)} notebooks). The other notebooks' figures and claims on this "
                   "page come from their last runs (when each last ran is in the table below; their figures are "
                   "marked).</p>")
    sections.append(("notebooks", "Notebooks and run times",
                     _table(["notebook", "status", "this run", "last measured (timings.json)", "executed copy"], rows)
                     + f"<p>Total of this run: {total:.1f} s ({total / 60:.1f} min).</p>" + note))

    # Claims.
    if claims_path is not None and Path(claims_path).exists():
        claims = _claims_html(claims_path)
        if by_name and older:
            claims = (f'<p class="older">Rows of {", ".join(sorted(older))} come from their last runs, not from this '
                      "one.</p>" + claims)
        sections.append(("claims", "Claims of the paper", claims))
    else:
        sections.append(("claims", "Claims of the paper", "<p>No verdicts were recorded in this run.</p>"))

    # Figures.
    figure_parts = []
    for folder in figures_dirs or ():
        folder = Path(folder)
        files = sorted(p for p in folder.glob("*") if p.is_file() and p.name not in SKIPPED_NAMES
                       and p.suffix.lower() in set(IMAGE_TYPES) | LINKED_TYPES) if folder.is_dir() else []
        figure_parts.append(f"<h3>{html.escape(shown_path(folder, out_dir))}</h3>")
        if not files:
            figure_parts.append("<p>No figures here.</p>")
        index = " ".join(f'<a href="#{html.escape(p.name)}">{html.escape(p.name)}</a>' for p in files)
        figure_parts.append(f"<p>{index}</p>" + "".join(_figure_html(p, out_dir, _older_note(p.name, older) if by_name
                                                                     else "") for p in files))
    sections.append(("figures", "Figures", "".join(figure_parts) or "<p>No figures folder.</p>"))

    # Profile and parameters.
    profile_parts = []
    if profile_path is not None and Path(profile_path).exists():
        profile_parts.append(f"<p>{html.escape(shown_path(profile_path, out_dir))}</p><pre>"
                             f"{html.escape(Path(profile_path).read_text())}</pre>")
    if params:
        profile_parts.append(_table(["notebook", "parameters given"], [
            [html.escape(stem), "<code>" + html.escape(json.dumps(_shown_parameters(p, out_dir), sort_keys=True))
             + "</code>"] for stem, p in params.items()]))
    sections.append(("profile", f"Profile {html.escape(profile_name)}", "".join(profile_parts) or "<p>-</p>"))

    # Environment.
    env = environment() if env is None else env
    sections.append(("environment", "Environment", _table(["", ""], [[html.escape(str(k)), html.escape(str(v))]
                                                                       for k, v in env.items()])))

    nav = "<nav>" + "".join(f'<a href="#{key}">{title}</a>' for key, title, _ in sections) + "</nav>"
    body = (f"<h1>HydraLoRA Lab: suite report, profile {html.escape(profile_name)}</h1>"
            f"<p>Written {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by <code>python -m hydralib suite</code>; "
            f"one file, readable offline (images are embedded; interactive figures are linked).</p>" + partial + nav
            + "".join(f'<h2 id="{key}">{title}</h2>{content}' for key, title, content in sections))
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / REPORT_NAME
    page.write_text(_page(f"suite report: {profile_name}", body), encoding="utf-8")
    return page


def _shown_parameters(params: dict, out_dir: Path) -> dict:
    """A notebook's parameters with each absolute path (a moved build folder) shown as shown_path shows it."""
    return {key: shown_path(value, out_dir) if isinstance(value, str) and os.path.isabs(value) else value
            for key, value in params.items()}


def _older_note(figure_name: str, older: dict[str, str]) -> str:
    """"from <notebook>, last ran <when>" for a figure (named NN_...) of a notebook not run in this run."""
    stem = next((stem for stem in older if figure_name[:3] == stem[:3]), None)
    return "" if stem is None else f"from {stem}, which last ran {older[stem]}, not in this run"


def report_records(out_dir: Path) -> list[dict]:
    """What the last suite run recorded about each notebook (status, seconds), or [] when there is none."""
    try:
        return json.loads((out_dir / "suite_report.json").read_text())
    except (OSError, ValueError):
        return []
