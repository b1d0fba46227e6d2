"""Build the flex_ml docs site offline: `make docs` (after `dvc repro`) or `python docs/build.py`.

1. Execute the notebooks in nbs/ (recursively: library notebooks, reports, tutorials) with the project's
   kernel, skipping the cells nbdev_test skips (`#| notest`, `#| slow`, `#| eval: false`) and the
   notebooks whose front matter says `skip_exec: true` (unless it also says `docs_exec: true`).
2. Process the executed notebooks with nbdev's processors (`nbdev_proc_nbs`' engine): show_doc cells with
   every exported function's signature and docstring, hidden cells removed, links to the API -> `_proc/`.
3. Turn `_proc/` into Markdown pages, add the latest pipeline results (metrics, DVC plots drawn by a
   local copy of vega, evaluation.png, the evaluation report, the `dvc dag` graph, the model card),
   and build the site with MkDocs Material (search, no CDN) -> `site/`.
4. Check the result: every <script src>, <link href>, <img src> and <iframe src> is local.

Tutorials: any .ipynb, .md or .qmd in nbs/tutorials/ becomes a page under "Tutorials", ordered by file
name (prefix them 01_, 02_, ...). Nothing else to register.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import hashlib
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
# Vega, Vega-Lite and vega-embed for the DVC plots: npm registry tarballs, pinned and checked by hash.
VENDOR = {
    "vega": ("5.33.0", "build/vega.min.js",
             "sha512-jNAGa7TxLojOpMMMrKMXXBos4K6AaLJbCgGDOw1YEkLRjUkh12pcf65J2lMSdEHjcEK47XXjKiOUVZ8L+MniBA=="),
    "vega-lite": ("5.23.0", "build/vega-lite.min.js",
                  "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    "vega-embed": ("6.29.0", "build/vega-embed.min.js",
                   "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
}
NPM_REGISTRY = os.environ.get("FLEX_ML_NPM_REGISTRY", "https://registry.npmjs.org")
SKIP_FLAGS = ("notest", "slow")  # settings.ini tst_flags: the cells nbdev_test skips


def log(msg): print(f"[docs] {msg}", flush=True)


def sh(cmd, **kw) -> str:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


# ---------------------------------------------------------------------------------------------- notebooks
_re_dir = re.compile(r"^\s*#\|\s*([\w-]+):?\s*(.*?)\s*$")


def directives(src: str) -> dict[str, str]:
    "The `#| key: value` lines at the top of a code cell."
    d = {}
    for line in src.splitlines():
        if not line.strip(): continue
        m = _re_dir.match(line)
        if not m: break
        d[m.group(1)] = m.group(2)
    return d


def frontmatter(nb) -> dict:
    "The YAML front matter of a notebook: a first raw cell between `---` lines."
    if nb.cells and nb.cells[0].cell_type == "raw":
        s = nb.cells[0].source.strip()
        if s.startswith("---") and s.endswith("---"):
            return yaml.safe_load(s.strip("-")) or {}
    return {}


def notebooks() -> list[Path]:
    "Every notebook in nbs/ the way nbdev finds them (recursive, no _ or . names)."
    out = []
    for p in sorted((ROOT / "nbs").rglob("*.ipynb")):
        rel = p.relative_to(ROOT / "nbs")
        if any(part.startswith(("_", ".")) for part in rel.parts): continue
        out.append(p)
    return out


def kernel_name() -> str:
    from jupyter_client.kernelspec import KernelSpecManager
    k = os.environ.get("FLEX_ML_DOCS_KERNEL", "flex-ml")
    return k if k in KernelSpecManager().find_kernel_specs() else "python3"


def execute(src: Path, dst: Path, kernel: str) -> tuple[str, float]:
    "Execute `src` in its own folder (as nbdev_test and JupyterLab do) and write it with outputs to `dst`."
    import nbformat
    from nbclient import NotebookClient
    t = time.time()
    nb = nbformat.read(src, as_version=4)
    fm = frontmatter(nb)
    ran = ROOT / "artifacts" / "report" / src.name  # a report template as `flex-ml report` ran it
    if src.parent.name == "reports" and ran.exists():
        nb = nbformat.read(ran, as_version=4)
        status = f"the pipeline's run ({ran.relative_to(ROOT)})"
    elif fm.get("skip_exec") and not fm.get("docs_exec"):
        status = "not executed (skip_exec)"
    else:
        for c in nb.cells:
            if c.cell_type != "code": continue
            d = directives(c.source)
            if any(f in d for f in SKIP_FLAGS) or d.get("eval", "").lower() == "false":
                c.metadata.setdefault("tags", []).append("skip-execution")
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2")
        client = NotebookClient(nb, kernel_name=kernel, timeout=900, resources={"metadata": {"path": str(src.parent)}},
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])  # not its TCP notice
        client.km = client.create_kernel_manager()
        client.execute(env=env)
        for c in nb.cells:
            tags = c.metadata.get("tags", [])
            if "skip-execution" in tags:
                tags.remove("skip-execution")
                if not tags: c.metadata.pop("tags")
        status = "executed"
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return status, time.time() - t


def execute_all(stage: Path, workers: int) -> None:
    "Copy nbs/ to `stage` with every notebook executed."
    if stage.exists(): shutil.rmtree(stage)
    nbs = ROOT / "nbs"
    for p in nbs.rglob("*"):
        rel = p.relative_to(nbs)
        if p.is_file() and p.suffix != ".ipynb" and not any(x.startswith(".") or x in ("_proc", "_docs") for x in rel.parts):
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, stage / rel)
    kernel = kernel_name()
    log(f"executing {len(notebooks())} notebooks with kernel {kernel!r}, {workers} at a time")
    with cf.ProcessPoolExecutor(workers) as ex:
        futs = {ex.submit(execute, p, stage / p.relative_to(nbs), kernel): p for p in notebooks()}
        for f in cf.as_completed(futs):
            status, dt = f.result()  # a cell error raises here and stops the build
            log(f"  {futs[f].relative_to(nbs)}: {status} in {dt:.0f} s")


def _do_eval(cell):
    """Which cells nbdev's `exec_show_docs` runs to render show_doc: exported cells, show_doc cells and
    cells of imports only. nbdev also runs any cell that has an import in it, which fails when such a
    cell uses a name from an earlier cell it does not run; the outputs of every cell are already there
    from step 1, so only what show_doc needs is run here."""
    import ast
    from nbdev.processors import _show_docs, cell_lang
    if cell_lang(cell) != "python" or cell.cell_type != "code" or not cell.source: return
    if "nbdev_export" + "()" in cell.source: return
    if cell.directives_.get("eval:", [""])[0].lower() == "false": return
    if cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"}: return True
    trees = cell.parsed_()
    if not trees: return
    if all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees): return True
    if _show_docs(trees): return True


def process(stage: Path) -> Path:
    """nbdev's processors on the executed notebooks -> _proc/: what `nbdev_proc_nbs` does, without its
    Quarto install step (it needs sudo, then pip-installs the project into whatever `pip` is on PATH)."""
    import nbdev.processors
    from nbdev.serve import proc_nbs
    log("nbdev processors (show_doc, links, hidden cells) -> _proc/")
    nbdev.processors._do_eval = _do_eval  # in this process: n_workers=0 below
    # They import the library and run exported cells; from nbs/, so the notebooks' relative paths hold.
    os.chdir(ROOT / "nbs")
    try: return Path(proc_nbs(path=str(stage), n_workers=0, force=True))
    finally: os.chdir(ROOT)


# ---------------------------------------------------------------------------------------------- markdown
def page_name(rel: Path) -> Path:
    "nbdev/Quarto's page name: 00_schema.ipynb -> schema, tutorials/01_x.ipynb -> tutorials/x."
    stem = re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.stem)
    return rel.with_name(stem)


class Linker:
    "Rewrites nbdev's links to the doc host (doc_host/doc_baseurl + page.html#anchor) into site-relative ones."
    def __init__(self):
        from configparser import ConfigParser
        cfg = ConfigParser(); cfg.read(ROOT / "settings.ini")
        base = cfg["DEFAULT"]["doc_host"].rstrip("/") + "/" + cfg["DEFAULT"]["doc_baseurl"].strip("/")
        self.re = re.compile(re.escape(base.rstrip("/")) + r"/([\w\-/.]*?)\.html(#[\w.\-]*)?")
        self.git = re.escape(cfg["DEFAULT"]["git_url"].rstrip("/"))
        self.parents: dict[tuple[str, str], str] = {}

    def fix_anchors(self, src: Path) -> None:
        "Links to a heading a page does not have: to the class's heading, else to the page."
        from markdown.extensions.toc import slugify
        heads = {}
        for f in src.rglob("*.md"):
            hs = re.findall(r"^#{1,6}\s+(.+?)\s*$", f.read_text(), re.M)
            heads[f.relative_to(src).as_posix()] = {slugify(re.sub(r"[`*]", "", h), "-") for h in hs}
        for f in src.rglob("*.md"):
            here = f.relative_to(src).parent
            def sub(m, here=here, f=f):
                target = os.path.normpath(here / m.group(1)) if m.group(1) else f.relative_to(src).as_posix()
                if target not in heads or m.group(2) in heads[target]: return m.group(0)
                parent = self.parents.get((target, m.group(2)))
                return f"]({m.group(1)}" + (f"#{parent})" if parent in heads[target] else ")")
            f.write_text(re.sub(r"\]\(([\w\-/.]*\.md)#([\w\-]+)\)", sub, f.read_text()))

    def __call__(self, text: str, page: Path) -> str:
        from markdown.extensions.toc import slugify
        depth = len(page.parts) - 1
        def sub(m):
            anchor = ""
            if m.group(2):
                name = m.group(2)[1:]
                anchor = "#" + slugify(name, "-")
                if "." in name:  # a method: its class's section when it has no show_doc of its own
                    self.parents[(m.group(1) + ".md", anchor[1:])] = slugify(name.rsplit(".", 1)[0], "-")
            return "../" * depth + m.group(1) + ".md" + anchor
        text = self.re.sub(sub, text)
        # show_doc's [source] links point into the git host named in settings.ini: not part of this site.
        return re.sub(r"\[source\]\(" + self.git + r"[^)]*\)(\{[^}\n]*\})?", "", text)


def _indent(s: str, n=4) -> str: return "\n".join((" " * n + l) if l.strip() else "" for l in s.splitlines())


def _text(x) -> str: return "".join(x) if isinstance(x, list) else (x or "")


def _quarto_md(src: str) -> str:
    "Quarto-only Markdown: callouts become admonitions, other fenced divs are dropped."
    out, in_callout = [], False
    for line in src.splitlines():
        m = re.match(r"^:::+\s*\{\.callout-(\w+)[^}]*\}\s*$", line)
        if m:
            out.append(f'!!! {m.group(1)}'); in_callout = True; continue
        if re.match(r"^:::+", line):
            in_callout = False; continue
        out.append(("    " + line) if in_callout and line.strip() else line)
    return "\n".join(out)


def nb_to_md(nb, page: Path, out_dir: Path, link) -> str:
    "One processed notebook as a Markdown page; images go beside it."
    parts, n_img = [], 0
    fm = frontmatter(nb)
    cells = nb.cells[1:] if fm else nb.cells
    if fm.get("title"):
        parts.append(f"# {fm['title']}")
        if fm.get("description"): parts.append(f"> {fm['description']}")
    assets = out_dir / (page.stem + "_files")
    for c in cells:
        src = _text(c.get("source"))
        if c.cell_type == "markdown":
            if src.strip(): parts.append(link(_quarto_md(src), page))
            continue
        if c.cell_type != "code": continue
        d = directives(src)
        if d.get("include") == "false": continue
        body = "\n".join(l for l in src.splitlines() if not _re_dir.match(l)).strip()
        if body and d.get("echo") != "false":
            block = f"```python\n{body}\n```"
            if d.get("code-fold"):
                summary = d.get("code-summary", "Source").strip('"')
                block = f'??? note "{summary}"\n\n' + _indent(block)
            parts.append(block)
        if d.get("output") == "false": continue
        stream = []
        for o in c.get("outputs", []):
            if o.output_type == "stream":
                if o.name == "stdout": stream.append(_text(o.text))
                continue
            if stream: parts.append("```text\n" + "".join(stream).rstrip() + "\n```"); stream = []
            if o.output_type == "error":
                raise SystemExit(f"{page}: a cell raised {o.ename}: {o.evalue}")
            data = o.get("data", {})
            if "text/markdown" in data:
                parts.append(link(_text(data["text/markdown"]), page))
            elif "image/png" in data or "image/jpeg" in data:
                kind = "png" if "image/png" in data else "jpeg"
                assets.mkdir(parents=True, exist_ok=True); n_img += 1
                f = assets / f"output_{n_img}.{kind}"
                f.write_bytes(base64.b64decode(_text(data[f"image/{kind}"])))
                parts.append(f"![output {n_img}]({assets.name}/{f.name})")
            elif "image/svg+xml" in data:
                assets.mkdir(parents=True, exist_ok=True); n_img += 1
                f = assets / f"output_{n_img}.svg"
                f.write_text(_text(data["image/svg+xml"]))
                parts.append(f"![output {n_img}]({assets.name}/{f.name})")
            elif "text/html" in data:
                h = _text(data["text/html"])
                if re.search(r"<script[^>]+src=", h): raise SystemExit(f"{page}: an output loads a script: {h[:200]}")
                parts.append('<div class="nb-output" markdown="0">\n' + h.strip() + "\n</div>")
            elif "text/plain" in data:
                parts.append("```text\n" + _text(data["text/plain"]).rstrip() + "\n```")
        if stream: parts.append("```text\n" + "".join(stream).rstrip() + "\n```")
    return "\n\n".join(parts) + "\n"


def write_pages(proc: Path, src: Path) -> dict[str, list[tuple[str, str]]]:
    "Markdown pages from _proc/ into the MkDocs source folder; returns the nav sections."
    import nbformat
    link = Linker()
    nav = {"home": [], "tutorials": [], "api": [], "reports": []}
    for p in sorted(proc.rglob("*")):
        rel = p.relative_to(proc)
        if not p.is_file() or p.suffix not in (".ipynb", ".md", ".qmd"): continue
        if rel.parts[0] == "reports" and not (ROOT / "artifacts" / "report" / rel.name).exists():
            continue  # a report template the pipeline has not run: no results to show
        page = page_name(rel).with_suffix(".md")
        dest = src / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".ipynb":
            nb = nbformat.read(p, as_version=4)
            md = nb_to_md(nb, page, dest.parent, link)
            title = frontmatter(nb).get("title") or page.stem
        else:
            text = p.read_text()
            fm = {}
            m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
            if m: fm, text = yaml.safe_load(m.group(1)) or {}, text[m.end():]
            md = (f"# {fm['title']}\n\n" if fm.get("title") else "") + (f"> {fm['description']}\n\n" if fm.get("description") else "")
            md += link(_quarto_md(text), page)
            title = fm.get("title") or page.stem
            # files a Markdown tutorial refers to (images) travel with it
            for f in p.parent.iterdir():
                if f.is_file() and f.suffix not in (".ipynb", ".md", ".qmd"): shutil.copy2(f, dest.parent / f.name)
        dest.write_text(md)
        key = ("home" if rel.parts == ("index.ipynb",) else "tutorials" if rel.parts[0] == "tutorials"
               else "reports" if len(rel.parts) > 1 else "api")
        nav[key].append((str(title), page.as_posix()))
    link.fix_anchors(src)
    return nav


# ---------------------------------------------------------------------------------------------- results
def vendor_js(dest: Path) -> list[str]:
    "vega, vega-lite, vega-embed from the npm registry (cached, hash-checked) into dest; their file names."
    cache = Path(os.environ.get("FLEX_ML_DOCS_CACHE", Path.home() / ".cache" / "flex-ml-docs"))
    cache.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for pkg, (ver, member, integrity) in VENDOR.items():
        tgz = cache / f"{pkg}-{ver}.tgz"
        algo, want = integrity.split("-", 1)
        if not tgz.exists() or base64.b64encode(hashlib.new(algo, tgz.read_bytes()).digest()).decode() != want:
            url = f"{NPM_REGISTRY}/{pkg}/-/{pkg}-{ver}.tgz"
            log(f"fetching {url}")
            with urllib.request.urlopen(url, timeout=60) as r: data = r.read()
            got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
            if got != want: raise SystemExit(f"{url}: {algo} {got} is not the pinned {want}")
            tgz.write_bytes(data)
        with tarfile.open(tgz) as t:
            js = t.extractfile(f"package/{member}").read()
        name = f"{pkg}-{ver}.min.js"
        (dest / name).write_bytes(js)
        names.append(name)
    return names


def dag_svg(dest: Path) -> str:
    "`dvc dag` as SVG: Graphviz's dot when installed, else a layered drawing made here."
    dot = sh(["dvc", "dag", "--dot"])
    if shutil.which("dot"):
        r = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True)
        dest.write_text(r.stdout); return "graphviz"
    edges = re.findall(r'"([^"]+)"\s*->\s*"([^"]+)"', dot)
    nodes = sorted({n for e in edges for n in e} | set(re.findall(r'^\s*"([^"]+)";', dot, re.M)))
    level = {n: 0 for n in nodes}
    for _ in nodes:
        for a, b in edges: level[b] = max(level[b], level[a] + 1)
    rows: dict[int, list[str]] = {}
    for n in nodes: rows.setdefault(level[n], []).append(n)
    w, h, gx, gy = 170, 36, 30, 60
    width = max(len(r) for r in rows.values()) * (w + gx) + gx
    pos = {}
    for lv, ns in rows.items():
        x0 = (width - len(ns) * (w + gx) + gx) / 2
        for i, n in enumerate(ns): pos[n] = (x0 + i * (w + gx), gy / 2 + lv * (h + gy))
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{len(rows) * (h + gy)}" font-family="sans-serif" font-size="13">',
           '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>']
    for a, b in edges:
        (x1, y1), (x2, y2) = pos[a], pos[b]
        svg.append(f'<line x1="{x1 + w / 2}" y1="{y1 + h}" x2="{x2 + w / 2}" y2="{y2}" stroke="black" marker-end="url(#a)"/>')
    for n, (x, y) in pos.items():
        svg.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="#eef" stroke="#336"/>'
                   f'<text x="{x + w / 2}" y="{y + h / 2 + 4}" text-anchor="middle">{html.escape(n)}</text>')
    dest.write_text("\n".join(svg + ["</svg>"]))
    return "built-in layout (Graphviz is not installed)"


def sanitize_report(src: Path, dest: Path) -> None:
    """The evaluation report as nbconvert wrote it, less the scripts it loads from a CDN (require.js for
    widgets, MathJax for LaTeX): the report has neither, and every plot is an embedded PNG."""
    h = src.read_text()
    h = re.sub(r'<script[^>]+src="https?://[^"]*"[^>]*>\s*</script>', "", h)
    h = re.sub(r'<link[^>]+href="https?://[^"]*"[^>]*>', "", h)
    dest.write_text(h)


def _finite(o):
    "JSON for the browser: NaN and Infinity (a ROC curve's first threshold) are not JSON; null is."
    if isinstance(o, dict): return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list): return [_finite(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o): return None
    return o


def _flat(d, pre=""):
    for k, v in d.items():
        if isinstance(v, dict): yield from _flat(v, f"{pre}{k}.")
        else: yield f"{pre}{k}", v


def _fmt(v): return f"{v:.4g}" if isinstance(v, float) else str(v)


def metrics_tables() -> str:
    """`dvc metrics show` as readable tables: a file of {split: {model: {metric: value}}} gives one table
    per split with the models side by side; any other file, its metrics one per row."""
    shown = json.loads(sh(["dvc", "metrics", "show", "--json"]))
    files = next(iter(shown.values()))["data"]
    out = []
    for path, content in sorted(files.items(), key=lambda kv: "evaluate" not in kv[0]):  # the model first
        data = content.get("data", {})
        if not data: continue
        out += [f"### `{path}`", ""]
        nested = {k: v for k, v in data.items() if isinstance(v, dict) and v and
                  all(isinstance(m, dict) and m and all(not isinstance(x, dict) for x in m.values()) for m in v.values())}
        rest = {k: v for k, v in data.items() if k not in nested}
        for split, models in nested.items():
            names = list(models)
            keys = list(dict.fromkeys(k for m in models.values() for k in m))
            out += [f"**{split}**", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            out += [f"| {k} | " + " | ".join(_fmt(models[n].get(k, "")) for n in names) + " |" for k in keys] + [""]
        flat = list(_flat(rest))
        if flat:
            out += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in flat] + [""]
    return "\n".join(out)


def results(src: Path) -> list[tuple[str, str]]:
    "The latest pipeline results as pages under results/."
    out = src / "results"
    out.mkdir(parents=True, exist_ok=True)
    vendor = vendor_js(out / "vendor")
    # DVC's own plots page, drawn with the local vega copies instead of the CDN its template names.
    tpl = (DOCS / "plots_template.html").read_text()
    scripts = "\n".join(f'<script src="vendor/{n}"></script>' for n in vendor)
    (ROOT / "build" / "docs").mkdir(parents=True, exist_ok=True)
    tpl_file = ROOT / "build" / "docs" / "plots_template.html"
    tpl_file.write_text(tpl.replace("<!-- VEGA_SCRIPTS -->", scripts))
    plots_dir = ROOT / "build" / "docs" / "dvc_plots"
    if plots_dir.exists(): shutil.rmtree(plots_dir)
    sh(["dvc", "plots", "show", "--html-template", str(tpl_file), "-o", str(plots_dir)])
    shutil.copytree(plots_dir, out, dirs_exist_ok=True)
    (out / "index.html").rename(out / "dvc-plots.html")
    # The same plots inline on the results page.
    plots = json.loads(sh(["dvc", "plots", "show", "--json", "-o", str(ROOT / "build" / "docs" / "dvc_plots_json")]))
    plots = plots.get("data", plots)
    vega, images = [], []
    for name, items in plots.items():
        for it in items:
            if it.get("type") == "vega":
                vega.append((name, it["content"]))
            elif it.get("type") == "image":
                images.append(name)
    metrics_md = sh(["dvc", "metrics", "show", "--md"])
    params_md = sh(["dvc", "params", "diff", "--all", "--md"])
    dag_how = dag_svg(out / "pipeline.svg")
    shutil.copy2(ROOT / "artifacts/evaluate/evaluation.png", out / "evaluation.png")
    sanitize_report(ROOT / "artifacts/report/evaluation.html", out / "evaluation-report.html")
    meta = json.loads((ROOT / "artifacts/model/metadata.json").read_text())
    ver = meta.get("version") or meta.get("model_version") or ""
    p = ["# Pipeline results", "",
         f"> The latest `dvc repro` of this checkout{(' (model ' + str(ver) + ')') if ver else ''}: metrics, plots, "
         "the evaluation report and the pipeline graph. Rebuilt by every `make docs`.", "",
         "## Pipeline", "", f"`dvc dag` (drawn with {dag_how}):", "",
         '<figure markdown="span">\n![dvc dag](pipeline.svg){ .dvc-dag }\n</figure>', "",
         "## Metrics", "", "Every metrics file the stages write (`dvc metrics show`), test metrics of the model beside "
         "the baselines trained in the same run.", "", metrics_tables(), "",
         '??? note "`dvc metrics show --md`, as DVC prints it"', "", '    <div class="metrics-table" markdown="1">', "",
         _indent(metrics_md.strip()), "", "    </div>", "",
         "## Plots", "",
         "`dvc plots show`, drawn in the page with a local copy of Vega "
         "([DVC's own plots page](dvc-plots.html)).", ""]
    for i, (name, spec) in enumerate(vega):
        spec_json = json.dumps(_finite(spec)).replace("</", "<\\/")
        p += [f"### {name}", "", f'<div class="vega-plot" id="vega-plot-{i}" data-spec="vega-spec-{i}"></div>',
              f'<script type="application/json" id="vega-spec-{i}">{spec_json}</script>', ""]
    p += [f'<script src="vendor/{n}"></script>' for n in vendor] + ['<script src="../assets/plots.js"></script>', ""]
    p += ["### Evaluation figure", "", "`artifacts/evaluate/evaluation.png`:", "", "![evaluation](evaluation.png)", "",
          "## Evaluation report", "",
          "The evaluation notebook executed by papermill (`flex-ml report`): "
          "[open the report](evaluation-report.html).", "",
          '<iframe class="report" src="evaluation-report.html" title="evaluation report"></iframe>', "",
          "## Parameters", "", params_md.strip(), ""]
    (out / "index.md").write_text("\n".join(p))
    card = (ROOT / "artifacts/model/model_card.md").read_text()
    if not card.lstrip().startswith("# "): card = "# Model card\n\n" + card
    (out / "model-card.md").write_text(card)
    return [("Overview", "results/index.md"), ("Model card", "results/model-card.md")]


# ---------------------------------------------------------------------------------------------- site
def write_config(build: Path, src: Path, site: Path, nav: dict, res: list) -> Path:
    def items(pairs): return [{t: p} for t, p in pairs]
    nav_y = [{"Home": "index.md"}]
    if nav["tutorials"]: nav_y.append({"Tutorials": items(nav["tutorials"])})
    nav_y.append({"API reference": items(nav["api"])})
    nav_y.append({"Pipeline results": items(res) + items(nav["reports"])})
    cfg = {"INHERIT": os.path.relpath(DOCS / "mkdocs.yml", build), "docs_dir": os.path.relpath(src, build),
           "site_dir": os.path.relpath(site, build) if site.is_relative_to(ROOT) else str(site), "nav": nav_y}
    f = build / "mkdocs.yml"
    f.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return f


_re_ref = re.compile(r'<(script|link|img|iframe|source)\b[^>]*?\b(src|href)="([^"]*)"', re.I)


def check_offline(site: Path) -> list[str]:
    "Every page's scripts, stylesheets, images and frames are files of the site."
    bad = []
    for f in site.rglob("*.html"):
        for tag, attr, url in _re_ref.findall(f.read_text(errors="replace")):
            if re.match(r"^(https?:)?//", url): bad.append(f"{f.relative_to(site)}: <{tag} {attr}={url}>")
    return bad


def offline_plots(out: Path) -> Path:
    "`dvc plots show -o out` with the local vega copies beside the page: it renders without the internet."
    tpl = (DOCS / "plots_template.html").read_text().replace('<p><a href="index.html">&larr; Pipeline results</a></p>', "")
    names = [f"{pkg}-{ver}.min.js" for pkg, (ver, _, _) in VENDOR.items()]
    (ROOT / "build").mkdir(exist_ok=True)
    tpl_file = ROOT / "build" / "plots_offline_template.html"
    tpl_file.write_text(tpl.replace("<!-- VEGA_SCRIPTS -->", "\n".join(f'<script src="vendor/{n}"></script>' for n in names)))
    sh(["dvc", "plots", "show", "--html-template", str(tpl_file), "-o", str(out)])
    vendor_js(out / "vendor")
    log(f"plots at {out / 'index.html'} (offline)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site-dir", default=os.environ.get("FLEX_ML_SITE_DIR", str(ROOT / "site")))
    ap.add_argument("--workers", type=int, default=int(os.environ.get("FLEX_ML_DOCS_WORKERS", "2")))
    ap.add_argument("--plots-only", action="store_true",
                    help="only `dvc plots show` into dvc_plots/, drawn with local vega copies (DVC's own page loads vega from a CDN)")
    a = ap.parse_args(argv)
    t0 = time.time()
    os.chdir(ROOT)
    if a.plots_only: return offline_plots(ROOT / "dvc_plots")
    build, site = ROOT / "build" / "docs", Path(a.site_dir).resolve()
    src = build / "src"
    for d in (src, build / "nbs"):
        if d.exists(): shutil.rmtree(d)
    execute_all(build / "nbs", a.workers)
    proc = process(build / "nbs")
    nav = write_pages(proc, src)
    shutil.copytree(DOCS / "assets", src / "assets")
    res = results(src)
    cfg = write_config(build, src, site, nav, res)
    log("mkdocs build")
    sh([str(BIN / "mkdocs"), "build", "--strict", "-q", "-f", str(cfg)])
    bad = check_offline(site)
    if bad: raise SystemExit("pages that would need the internet:\n" + "\n".join(bad))
    log(f"site at {site} ({sum(1 for _ in site.rglob('*.html'))} pages) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
