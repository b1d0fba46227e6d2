"""The docs site: `docs/build.py` (what `make docs` runs after `dvc repro`) in the scratch copy that the
pipeline tests use, then every page crawled (links, scripts, stylesheets, images all resolve inside the
site) and the site opened in headless Chromium (Debian's chromium, driven by Playwright) over a
loopback HTTP server that refuses every request leaving the site. Screenshots go to
$FLEX_ML_TEST_ARTIFACTS/docs (default test-artifacts/docs)."""
import json
import os
import re
import threading
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from conftest import ROOT, run

pytestmark = pytest.mark.slow
ARTIFACTS = Path(os.environ.get("FLEX_ML_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "docs"


@pytest.fixture(scope="module")
def site(request):
    "The built site; FLEX_ML_DOCS_SITE names one already built (by `make docs`) to check it instead."
    if os.environ.get("FLEX_ML_DOCS_SITE"): return Path(os.environ["FLEX_ML_DOCS_SITE"]).resolve()
    p, _ = request.getfixturevalue("credit_project")
    out = p / "site"
    r = run(["python", "docs/build.py", "--site-dir", str(out)], p, timeout=1500)
    assert "[docs] site at" in r.stdout
    return out


class _Page(HTMLParser):
    "The ids and the references (tag, attribute, url) of one HTML page."
    def __init__(self):
        super().__init__(); self.ids, self.refs = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"): self.ids.add(a["id"])
        if tag == "a" and a.get("name"): self.ids.add(a["name"])
        for attr in ("href", "src"):
            if a.get(attr) is not None and tag in ("a", "link", "script", "img", "iframe", "source"):
                self.refs.append((tag, attr, a[attr]))


def _parse(f: Path) -> _Page:
    p = _Page(); p.feed(f.read_text(errors="replace")); return p


def test_every_page_and_link_resolves_offline(site):
    pages = {f: _parse(f) for f in site.rglob("*.html")}
    assert len(pages) >= 20
    broken, external = [], []
    for f, page in pages.items():
        for tag, attr, url in page.refs:
            u = urlsplit(url)
            if u.scheme in ("mailto", "data", "javascript") or url.startswith("#") and tag == "a" and not url[1:]:
                continue
            if u.scheme or url.startswith("//"):
                if tag != "a": external.append(f"{f.relative_to(site)}: <{tag} {attr}={url}>")
                continue  # a plain link to another site (fastcore's docs, ...) needs nothing to render
            base = site if u.path.startswith("/") else f.parent  # 404.html links from the site's root
            target = f if not u.path else (base / unquote(u.path).lstrip("/")).resolve()
            if target.is_dir(): target = target / "index.html"
            if not target.exists():
                broken.append(f"{f.relative_to(site)}: {url}"); continue
            if u.fragment and target.suffix == ".html" and target in pages and u.fragment not in pages[target].ids:
                broken.append(f"{f.relative_to(site)}: {url} (no such anchor)")
    assert not external, "pages that load from the internet:\n" + "\n".join(external)
    assert not broken, "broken internal links:\n" + "\n".join(sorted(set(broken)))


def test_content_api_tutorials_and_results(site):
    schema = (site / "schema.html").read_text()
    text = re.sub(r"<[^>]+>", "", schema)
    # nbdev's show_doc: the signature and docstring of each exported function
    assert 'id="load_schema"' in schema and "def load_schema(\n    path\n)-&gt;Schema:" in text
    from flex_ml import _modidx
    documented = set(site.glob("*.html"))
    for mod in _modidx.d["syms"]:
        page = site / (mod.split(".")[-1] + ".html")
        assert page in documented, f"{mod}: no API page"
    index = (site / "index.html").read_text()
    assert "Quick start" in index and "flex_ml" in index
    nav = (site / "index.html").read_text()
    for t in ("From notebook to production in 10 minutes", "Bring your own dataset", "Deploy the service"):
        assert t in nav, t
    tut = (site / "tutorials" / "notebook_to_production.html").read_text()
    assert "21 features" in tut and "golden examples, max |score difference|" in tut  # executed outputs
    res = (site / "results" / "index.html").read_text()
    for needle in ("test.model.auc", "vega-plot", "evaluation.png", "pipeline.svg", "evaluation-report.html"):
        assert needle in res, needle
    assert "<svg" in (site / "results" / "pipeline.svg").read_text()
    assert "Intended use" in (site / "results" / "model-card.html").read_text()
    assert "Fairness slices" in (site / "results" / "evaluation-report.html").read_text()
    plots = (site / "results" / "dvc-plots.html").read_text()
    assert "vegaEmbed" in plots and "cdn.jsdelivr" not in plots
    search = json.loads((site / "search" / "search_index.json").read_text())
    assert any("load_schema" in d.get("text", "") + d.get("title", "") for d in search["docs"])


@pytest.fixture(scope="module")
def served(site):
    "The site on a loopback HTTP server: (base url, list of requests that tried to leave it)."
    handler = partial(_QuietHandler, directory=str(site))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    try: yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally: srv.shutdown(); srv.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture()
def page(browser, served):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.outside, pg.errors = [], []
    def route(r):
        if r.request.url.startswith(served): r.continue_()
        else: pg.outside.append(r.request.url); r.abort()
    pg.route("**/*", route)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    yield pg
    ctx.close()


def _shot(pg, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _images_loaded(pg, selector="img"):
    return pg.eval_on_selector_all(selector, "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth])")


def test_home_page_and_search_in_chromium(page, served):
    page.goto(served + "index.html")
    assert page.title().startswith("flex_ml")
    assert page.locator("article h1").first.inner_text().startswith("flex_ml")
    assert page.locator("nav.md-nav").first.is_visible()
    _shot(page, "home")
    page.locator("input.md-search__input").click(force=True)
    page.keyboard.type("load_schema")  # Material searches on key events, in a web worker over the site's index
    hit = page.locator('.md-search-result__item a[href*="schema.html"][href$="#load_schema"]').first
    hit.wait_for(timeout=15000)
    _shot(page, "search")
    hit.click()
    page.wait_for_url("**/schema.html*#load_schema")
    assert page.locator("h3#load_schema").is_visible()
    assert not page.outside and not page.errors, (page.outside, page.errors)


def test_api_page_in_chromium(page, served):
    page.goto(served + "schema.html#load_schema")
    h = page.locator("h3#load_schema")
    assert h.is_visible()
    code = page.locator("article pre").filter(has_text="def load_schema(").first
    assert code.is_visible() and code.bounding_box()["height"] > 10
    page.locator("h3#load_schema").scroll_into_view_if_needed()
    _shot(page, "api_schema")
    assert not page.outside and not page.errors, (page.outside, page.errors)


def test_results_page_draws_plots_in_chromium(page, served):
    page.goto(served + "results/index.html")
    page.wait_for_function("""() => { const p = [...document.querySelectorAll('.vega-plot')];
        return p.length > 0 && p.every(e => e.dataset.rendered); }""", timeout=30000)
    plots = page.eval_on_selector_all(".vega-plot", """els => els.map(e => [e.dataset.rendered,
        !!e.querySelector('svg, canvas'), e.getBoundingClientRect().height])""")
    assert len(plots) >= 4 and all(r == "true" and drawn and h > 100 for r, drawn, h in plots), plots
    imgs = dict(_images_loaded(page, "article img"))
    assert imgs.get("evaluation.png", 0) > 0 and imgs.get("pipeline.svg", 0) > 0, imgs
    _shot(page, "results")
    assert not page.outside and not page.errors, (page.outside, page.errors)


def test_dvc_plots_page_and_report_in_chromium(page, served):
    page.goto(served + "results/dvc-plots.html")
    page.wait_for_selector("svg.marks, canvas.marks", timeout=30000)
    assert page.locator("svg.marks, canvas.marks").count() >= 4
    _shot(page, "dvc_plots")
    page.goto(served + "results/evaluation-report.html")
    page.wait_for_load_state("load")
    imgs = _images_loaded(page)
    assert imgs and all(w > 0 for _, w in imgs), imgs
    _shot(page, "evaluation_report")
    page.goto(served + "tutorials/notebook_to_production.html")
    assert page.locator("article h1").first.inner_text().startswith("From notebook to production")
    _shot(page, "tutorial")
    assert not page.outside and not page.errors, (page.outside, page.errors)


def test_make_plots_renders_dvc_plots_offline(request, browser):
    "`make plots` (docs/build.py --plots-only): DVC's plots page with local vega draws every chart without the internet."
    p, _ = request.getfixturevalue("credit_project")
    run(["python", "docs/build.py", "--plots-only"], p, timeout=600)
    html = p / "dvc_plots" / "index.html"
    srcs = [v for t, a, v in _parse(html).refs if t == "script"]
    assert srcs and all(s.startswith("vendor/") for s in srcs), srcs
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    outside = []
    pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else (outside.append(r.request.url), r.abort()))
    pg.goto(html.as_uri())
    pg.wait_for_function("document.querySelectorAll('svg.marks, canvas.marks').length >= 6", timeout=30_000)
    _shot(pg, "dvc_plots_offline")
    ctx.close()
    assert not outside, outside
