"""Build README.md and an HTML docs site in _docs/ from nbs/, offline and without Quarto.

nbdev's own processing does the notebook work (show_doc rendering, `#| hide` and directive cleanup,
frontmatter) into `_proc/`; nbconvert then writes one HTML page per notebook and README.md from
`_proc/index.ipynb`. The standard nbdev files (`nbs/_quarto.yml`, `nbs/nbdev.yml`, `nbs/sidebar.yml`) are
refreshed too, so `nbdev-docs` keeps working for anyone who has Quarto.

Usage: python tools/build_docs.py [--readme-only]
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
from pathlib import Path

import nbformat
import yaml
from nbconvert import HTMLExporter, MarkdownExporter
from nbconvert.preprocessors import TagRemovePreprocessor
from nbdev.config import get_config, nbpath2html
from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml
from nbdev.serve import proc_nbs

CSS = """
body { margin: 0; }
.ip-layout { display: flex; min-height: 100vh; }
.ip-nav { width: 15rem; flex: none; background: #f6f7f9; border-right: 1px solid #ddd; padding: 1rem; font: 14px/1.5 system-ui, sans-serif; }
.ip-nav a { display: block; color: #234; text-decoration: none; padding: .15rem .3rem; border-radius: 3px; }
.ip-nav a.active, .ip-nav a:hover { background: #dde6f3; }
.ip-nav .ip-title { font-weight: 700; font-size: 16px; margin-bottom: .6rem; }
.ip-nav .ip-section { margin-top: .6rem; color: #667; font-size: 12px; text-transform: uppercase; }
.ip-main { flex: 1; min-width: 0; }
"""


def _sidebar_entries(nbs: Path) -> list[tuple[str | None, Path]]:
    "(section, notebook path) in sidebar.yml's order."
    data = yaml.safe_load((nbs / "sidebar.yml").read_text())
    out: list[tuple[str | None, Path]] = []

    def walk(items, section=None):
        for it in items:
            if isinstance(it, str):
                out.append((section, nbs / it))
            elif isinstance(it, dict) and "contents" in it:
                walk(it["contents"], it.get("section"))

    walk(data["website"]["sidebar"]["contents"])
    return [(s, p) for s, p in out if p.suffix == ".ipynb"]


def _title(nb) -> str:
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.startswith("---"):
            m = re.search(r"^title:\s*(.+)$", c.source, re.M)
            if m:
                return m.group(1).strip().strip("'\"")
        if c.cell_type == "markdown":
            m = re.match(r"#\s+(.+)", c.source)
            if m:
                return m.group(1).strip()
    return "untitled"


_SOURCE_LINK = re.compile(r'\[source\]\(([^)]+)\)\{target="_blank" style="([^"]+)"\}')


def _clean(nb):
    "Make nbdev's processed notebook acceptable to nbconvert and render its frontmatter as a heading."
    for c in nb.cells:
        c.get("metadata", {}).pop("execution", None)  # nbdev writes a float `total` that nbconvert's schema rejects
        if c.cell_type != "code":
            continue
        # what Quarto would do: hide the input of `#| echo: false` cells, drop directive lines, render show_doc's source link
        if re.search(r"^#\|\s*echo:\s*false", c.source, re.M):
            c.metadata.setdefault("tags", []).append("remove_input")
        c.source = "\n".join(ln for ln in c.source.splitlines() if not ln.startswith("#|")).strip("\n")
        for o in c.get("outputs", []):
            md = o.get("data", {}).get("text/markdown")
            if isinstance(md, str):
                o["data"]["text/markdown"] = _SOURCE_LINK.sub(r'<a href="\1" target="_blank" style="\2">source</a>', md)
    cells = []
    for c in nb.cells:
        if c.cell_type == "raw" and c.source.startswith("---"):
            fm = yaml.safe_load(c.source.strip().strip("-")) or {}
            md = f"# {fm.get('title', '')}\n\n" + (f"> {fm['description']}\n" if fm.get("description") else "")
            cells.append(nbformat.v4.new_markdown_cell(md))
        else:
            cells.append(c)
    nb.cells = cells
    return nb


def build(readme_only: bool = False) -> Path:
    cfg = get_config()
    root, nbs, docs = cfg.config_path, Path(cfg.nbs_path), Path(cfg.doc_path)
    refresh_quarto_yml()
    nbdev_sidebar()
    proc = proc_nbs(n_workers=0, force=True, file_glob="index.ipynb" if readme_only else "")
    # README.md from the processed index notebook
    idx = _clean(nbformat.read(proc / "index.ipynb", as_version=4))
    md, _ = MarkdownExporter().from_notebook_node(idx)
    (root / "README.md").write_text(
        "<!-- generated from nbs/index.ipynb by tools/build_docs.py: edit the notebook, not this file -->\n\n" + md.strip() + "\n"
    )
    if readme_only:
        return root / "README.md"
    # HTML site
    if docs.exists():
        shutil.rmtree(docs)
    docs.mkdir(parents=True)
    entries = _sidebar_entries(nbs)
    pages = []
    for section, src in entries:
        rel = src.relative_to(nbs)
        nb = _clean(nbformat.read(proc / rel, as_version=4))
        pages.append((section, rel, nb, nbpath2html(rel)))
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(Path(__file__).parent / "docs_template")])
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={"remove_input"}, enabled=True), enabled=True)
    for section, rel, nb, out in pages:
        nav = [f'<div class="ip-title"><a href="{"../" * (len(out.parts) - 1)}index.html">{html.escape(cfg.title)}</a></div>']
        last = None
        for s, r, n, o in pages:
            if s != last and s:
                nav.append(f'<div class="ip-section">{html.escape(s)}</div>')
            last = s
            href = "../" * (len(out.parts) - 1) + o.as_posix()
            nav.append(f'<a href="{href}"{" class=active" if o == out else ""}>{html.escape(_title(n))}</a>')
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": _title(nb)}})
        body = body.replace("</head>", f'<link rel="icon" href="data:,"><style>{CSS}</style></head>', 1)  # no favicon request
        body = re.sub(
            r"(<body[^>]*>)",
            r'\1<div class="ip-layout"><nav class="ip-nav">' + "\n".join(nav).replace("\\", "\\\\") + '</nav><div class="ip-main">',
            body,
            count=1,
        )
        body = body.replace("</body>", "</div></div></body>", 1)
        dest = docs / out
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body)
    # static files the notebooks link to (pictures under nbs/)
    for f in nbs.rglob("*"):
        if f.suffix.lower() in {".png", ".jpg", ".svg", ".gif"} and not any(p.startswith((".", "_")) for p in f.relative_to(nbs).parts):
            (docs / f.relative_to(nbs)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, docs / f.relative_to(nbs))
    print(f"README.md and {len(pages)} HTML pages in {docs}/")
    return docs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme-only", action="store_true", help="only regenerate README.md")
    build(ap.parse_args().readme_only)
