"""The docs site in a real browser: every notebook has a page, reachable from the sidebar; pages load in headless
Chromium (Debian's `chromium`) with no console errors, every image renders, widgets show their static forms, API
pages show signatures; screenshots go to paper/screenshots/.

The site is built by `make docs` (tools/build_docs.py); .ci/run builds it before the tests and installs Chromium.
Without Chromium the test skips locally and fails under CI (CI=1)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS, NBS, SHOTS = ROOT / "_docs", ROOT / "nbs", ROOT / "paper" / "screenshots"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = (
    "index.html",
    "widgets.html",
    "reproduce.html",
    "env.html",
    "tutorials/quickstart.html",
    "tutorials/mdp.html",
    "tutorials/your_experts.html",
    "tutorials/reproduce.html",
)
pytestmark = pytest.mark.slow


def _page(nb: Path) -> str:
    "The HTML page nbdev names for a notebook: the number prefix dropped (10_shapes_scene.ipynb -> shapes_scene.html)."
    from nbdev.config import nbpath2html

    return nbpath2html(nb.relative_to(NBS)).as_posix()


def _notebooks() -> list[Path]:
    return sorted(p for p in NBS.rglob("*.ipynb") if not any(part.startswith((".", "_")) for part in p.relative_to(NBS).parts))


@pytest.fixture(scope="module")
def site():
    "The built site (built here if missing or older than a notebook), served on 127.0.0.1."
    newest = max(p.stat().st_mtime for p in _notebooks())
    if not (DOCS / "index.html").exists() or (DOCS / "index.html").stat().st_mtime < newest:
        subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py")], cwd=ROOT, check=True, timeout=900)
    handler = functools.partial(_Quiet, directory=str(DOCS))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_every_notebook_has_a_page_in_the_sidebar(site):
    index = (DOCS / "index.html").read_text()
    missing = [nb.name for nb in _notebooks() if not (DOCS / _page(nb)).exists()]
    unlinked = [nb.name for nb in _notebooks() if nb.name != "index.ipynb" and f'href="{_page(nb)}"' not in index]
    assert not missing, f"notebooks without a page: {missing}"
    assert not unlinked, f"pages the index's sidebar does not link: {unlinked}"


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        msg = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    pw = pytest.importorskip("playwright.sync_api")
    with tempfile.TemporaryDirectory() as profile, pw.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=FLAGS, viewport={"width": 1280, "height": 900}
        )
        yield ctx
        ctx.close()


def test_pages_render_in_chromium(site, browser):
    problems: list[str] = []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    for nb in _notebooks():
        name = _page(nb)
        errors: list[str] = []

        def on_console(m):
            return errors.append(f"console {m.type}: {m.text[:200]}") if m.type == "error" else None

        def on_error(e):
            return errors.append(f"page error: {str(e)[:200]}")

        def on_failed(r):
            return errors.append(f"request failed: {r.url[:120]}")

        def on_response(r):
            return errors.append(f"HTTP {r.status} for {r.url[:120]}") if r.status >= 400 else None

        page.on("console", on_console)
        page.on("pageerror", on_error)
        page.on("requestfailed", on_failed)
        page.on("response", on_response)
        resp = page.goto(f"{site}/{name}", wait_until="load")
        if resp is None or resp.status != 200:
            problems.append(f"{name}: HTTP {resp.status if resp else 'no response'}")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src.slice(0, 80))")
        n_img = page.evaluate("document.images.length")
        if broken:
            problems.append(f"{name}: {len(broken)} of {n_img} images do not render: {broken[:3]}")
        text = page.inner_text("body")
        if "Traceback (most recent call last)" in text:
            problems.append(f"{name}: a traceback is rendered in the page")
        stem = Path(name).stem
        if stem == "widgets":
            cards = page.evaluate("document.querySelectorAll('.ip-card').length")
            card_imgs = page.evaluate("[...document.querySelectorAll('.ip-card img')].filter(i => i.naturalWidth > 0).length")
            if cards < 12 or card_imgs < 12:
                problems.append(f"widgets: static fallbacks missing ({cards} cards, {card_imgs} pictures)")
        if "#| default_exp" in nb.read_text():  # a library notebook: its API is documented with signatures and docstrings
            sigs = page.evaluate(
                "[...document.querySelectorAll('h3 + div.highlight pre')].filter(p => /^(async )?(def|class) /.test(p.innerText.trim())).length"
            )
            docs = page.evaluate("[...document.querySelectorAll('h3 + div.highlight + p > em')].length")
            if sigs == 0 or docs == 0:
                problems.append(f"{name}: API page without signatures ({sigs}) or docstrings ({docs})")
        if name in SCREENSHOT:
            first_widget = page.query_selector(".ip-row")  # show a widget's static form where the page has one
            if first_widget is not None and name != "index.html":
                first_widget.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / (name.replace("/", "_").removesuffix(".html") + ".png")), full_page=False)
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_error)
        page.remove_listener("requestfailed", on_failed)
        page.remove_listener("response", on_response)
        problems += [f"{name}: {e}" for e in errors]
    page.close()
    assert not problems, "\n".join(problems)
