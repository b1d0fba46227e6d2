"""Build the flex_ml docs site offline: `make docs` (after `dvc repro`) or `python docs/build.py`.

1. Execute the notebooks in nbs/ (recursively: library notebooks, reports, tutorials) with the project's
   kernel, skipping the cells nbdev_test skips (`#| notest`, `#| slow`, `#| eval: false`) and the
   notebooks whose front matter says `skip_exec: true` (unless it also says `docs_exec: true`). nbdev's
   `add_show_docs` processor first adds a show_doc cell after each exported definition, so the run
   renders every signature and docstring.
2. Process each executed notebook with nbdev's processors (`NBProcessor`, the `FilterDefaults` list
   less the two that run code): hidden and export cells removed, show_doc cells set `echo: false`,
   links to the API.
3. Turn them into Markdown pages with nbconvert's MarkdownExporter (its TagRemove, CoalesceStreams and
   ExtractOutput preprocessors, a preprocessor for the Quarto cell options nbdev leaves, and
   docs/templates/page.md.j2), add the latest pipeline results (metrics, DVC plots drawn by a local
   copy of vega, evaluation.png, the evaluation report, the `dvc dag` graph, the model card), and
   build the site with MkDocs Material (search, no CDN) -> `site/`.
4. Check the result: every <script src>, <link href>, <img src> and <iframe src> is local.

Public, documented APIs only (nbdev, execnb, nbclient, nbconvert, MkDocs): nothing of nbdev's is
patched or imported by a private name.

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
# Only public, documented APIs: nbdev's notebook processor (`NBProcessor`, `extract_directives`,
# `first_code_ln`, the processors in `nbdev.processors`, `FrontmatterProc`, `FilterDefaults`, the config),
# execnb's notebook I/O, nbclient to run a notebook, and nbconvert's Markdown exporter, preprocessors and
# templates. Nothing of nbdev's is replaced or patched.
def frontmatter(path: Path) -> dict:
    "A notebook's front matter as nbdev reads it (`FrontmatterProc`: a raw `---` cell, or a `# title` / `> description` cell)."
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    return NBProcessor(path, [FrontmatterProc], process=True).nb.frontmatter_


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


def with_show_docs(src: Path):
    """The notebook with nbdev's `add_show_docs` applied: a `show_doc(name)` cell after each exported
    definition, which the notebook's own run then renders (nbdev renders them in a second run of the
    exported cells, `exec_show_docs`). The import of show_doc goes in first, hidden (`#| hide`).
    A cell nbdev_test skips (a flag of settings.ini's `tst_flags`, or `#| eval: false`) gets nbclient's
    `skip-execution` tag."""
    from execnb.nbio import mk_cell, nb2str
    from nbdev.config import get_config
    from nbdev.process import NBProcessor, extract_directives
    from nbdev.processors import add_show_docs
    import nbformat
    proc = NBProcessor(src, [add_show_docs], rm_directives=False, process=True)
    skip = set(get_config().tst_flags.split())
    for c in proc.nb.cells:
        if c.cell_type != "code": continue
        d = extract_directives(c, remove=False)
        if skip & d.keys() or d.get("eval:", [""])[0].lower() == "false":
            c.metadata.setdefault("tags", []).append("skip-execution")
    if any(c.cell_type == "code" and c.source.startswith("show_doc(") for c in proc.nb.cells):
        proc.nb.cells.insert(0, mk_cell("#| hide\nfrom nbdev.showdoc import show_doc"))
    return nbformat.reads(nb2str(proc.nb), as_version=4)


def execute(src: Path, dst: Path, kernel: str) -> tuple[str, float]:
    "Execute `src` in its own folder (as nbdev_test and JupyterLab do) and write it with outputs to `dst`."
    import nbformat
    from nbclient import NotebookClient
    t = time.time()
    fm = frontmatter(src)
    ran = ROOT / "artifacts" / "report" / src.name  # a report template as `flex-ml report` ran it
    if src.parent.name == "reports" and ran.exists():
        nb = nbformat.read(ran, as_version=4)
        status = f"the pipeline's run ({ran.relative_to(ROOT)})"
    elif fm.get("skip_exec") and not fm.get("docs_exec"):
        nb = nbformat.read(src, as_version=4)
        status = "not executed (skip_exec)"
    else:
        nb = with_show_docs(src)
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


def process(path: Path):
    """nbdev's processors on one executed notebook, as `nbdev_proc_nbs` runs them for Quarto (front matter,
    hidden cells and export cells removed, show_doc cells set to `echo: false` / `output: asis`, links to
    the API, ...), with settings.ini's `procs` and `skip_procs`; less the two that run code: step 1 added
    the show_doc cells and the notebook's run rendered them. Returns (notebook for nbconvert, front matter)."""
    from execnb.nbio import nb2str, read_nb
    from nbdev.processors import FilterDefaults, add_show_docs, exec_show_docs
    import nbformat
    class DocsProcs(FilterDefaults):  # nbdev's documented way to choose the processors
        def base_procs(self): return [p for p in super().base_procs() if p not in (add_show_docs, exec_show_docs)]
    proc = DocsProcs().nb_proc(read_nb(path))
    proc.process()
    fm = getattr(proc.nb, "frontmatter_", {})
    nb = nbformat.reads(nb2str(proc.nb), as_version=4)
    for c in nb.cells: c.pop("has_sd", None)  # add_show_docs' mark for mv_exports, not nbformat's
    return nb, fm


# ---------------------------------------------------------------------------------------------- markdown
def page_name(rel: Path) -> Path:
    "nbdev/Quarto's page name: 00_schema.ipynb -> schema, tutorials/01_x.ipynb -> tutorials/x."
    stem = re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.stem)
    return rel.with_name(stem)


class Linker:
    "Rewrites nbdev's links to the doc host (doc_host/doc_baseurl + page.html#anchor) into site-relative ones."
    def __init__(self):
        from nbdev.config import get_config
        cfg = get_config()
        base = cfg.doc_host.rstrip("/") + "/" + cfg.doc_baseurl.strip("/")
        self.re = re.compile(re.escape(base.rstrip("/")) + r"/([\w\-/.]*?)\.html(#[\w.\-]*)?")
        self.git = re.escape(cfg.git_url.rstrip("/"))
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


def _front_md(fm: dict) -> str:
    return (f"# {fm['title']}\n\n" if fm.get("title") else "") + (f"> {fm['description']}\n\n" if fm.get("description") else "")


def _quarto_cells(link):
    """nbconvert preprocessor: the Quarto dialect nbdev's processors leave, as MkDocs and nbconvert's own
    preprocessors read it. `link` (a Linker) is bound here, not passed in the resources, which nbconvert copies."""
    from nbconvert.preprocessors import Preprocessor
    from nbdev.process import extract_directives, first_code_ln

    class QuartoCells(Preprocessor):
        """Quarto cell options become nbconvert tags (`include: false` drops the cell, `echo: false` its code,
        `output: false` its outputs: TagRemovePreprocessor acts on them) and `code-fold` a flag the page
        template folds the code under; the option lines leave the code. Streams end their lines with a
        plain newline. Markdown (cells and outputs) gets the site's links, and callouts as admonitions.
        A cell that raised, or an HTML output that loads a script, stops the build.
        `resources["page"]`: the page's path in the site."""
        def preprocess(self, nb, resources):
            page = resources["page"]
            cells = []
            for c in nb.cells:
                if c.cell_type == "raw": continue  # the front matter (FrontmatterProc's), which the page's title shows
                if c.cell_type == "markdown":
                    if c.source.strip(): c.source = link(_quarto_md(c.source), page); cells.append(c)
                    continue
                d = extract_directives(c, remove=False)
                opt = lambda k: " ".join(d.get(k + ":", [])).strip('"').lower()
                if opt("include") == "false": continue
                lines = c.source.splitlines(True)
                i = first_code_ln(lines)
                c.source = "".join(lines[i:]).strip() if i is not None else ""
                tags = c.metadata.setdefault("tags", [])
                if opt("echo") == "false" or not c.source: tags.append("remove_input")
                if opt("output") == "false": tags.append("remove_output")
                if d.get("code-fold:"): c.metadata["code_fold"] = " ".join(d.get("code-summary:", ["Source"])).strip('"')
                for o in c.get("outputs", []):
                    if o.output_type == "error": raise SystemExit(f"{page}: a cell raised {o.ename}: {o.evalue}")
                    # a CRLF file through a terminal (`!head`) ends lines with \r\r\n: line ends, as a terminal
                    # shows them, not the overwrites CoalesceStreams reads in a \r followed by text
                    if o.output_type == "stream": o.text = re.sub(r"\r+\n", "\n", o.text)
                    data = o.get("data", {})
                    if "text/markdown" in data: data["text/markdown"] = link(data["text/markdown"], page)
                    if re.search(r"<script[^>]+src=", data.get("text/html", "")):
                        raise SystemExit(f"{page}: an output loads a script: {data['text/html'][:200]}")
                cells.append(c)
            nb.cells = cells
            return nb, resources
    return QuartoCells


def markdown_exporter(link):
    """nbconvert's MarkdownExporter with its own preprocessors (TagRemove, CoalesceStreams, ExtractOutput)
    after QuartoCells, and docs/templates/page.md.j2 (nbconvert's markdown template with fenced outputs,
    stdout only, code folds and HTML outputs kept apart from Markdown)."""
    from nbconvert import MarkdownExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor, ExtractOutputPreprocessor, TagRemovePreprocessor
    from traitlets.config import Config
    c = Config()
    c.MarkdownExporter.default_preprocessors = []
    c.MarkdownExporter.preprocessors = [_quarto_cells(link), TagRemovePreprocessor, CoalesceStreamsPreprocessor,
                                        ExtractOutputPreprocessor]
    for p in ("TagRemovePreprocessor", "CoalesceStreamsPreprocessor", "ExtractOutputPreprocessor"): c[p].enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    # show_doc's Markdown first, as Quarto's `output: asis` shows it; then pictures, tables, text
    c.NbConvertBase.display_data_priority = ["text/markdown", "image/png", "image/jpeg", "image/svg+xml", "text/html", "text/plain"]
    return MarkdownExporter(config=c, template_file="page.md.j2", extra_template_paths=[str(DOCS / "templates")])


def nb_to_md(exporter, nb, fm: dict, page: Path, out_dir: Path) -> str:
    "One processed notebook as a Markdown page; its pictures go beside it, in <page>_files/."
    res = {"page": page, "unique_key": "output", "output_files_dir": page.stem + "_files"}
    body, res = exporter.from_notebook_node(nb, resources=res)
    for name, data in res.get("outputs", {}).items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_bytes(data)
    return _front_md(fm) + re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"


def write_pages(stage: Path, src: Path) -> dict[str, list[tuple[str, str]]]:
    "Markdown pages from the executed notebooks (and any Markdown tutorials) into the MkDocs source folder; returns the nav sections."
    log("nbdev processors (show_doc, links, hidden cells) and nbconvert -> Markdown")
    link = Linker()
    exporter = markdown_exporter(link)
    nav = {"home": [], "tutorials": [], "api": [], "reports": []}
    for p in sorted(stage.rglob("*")):
        rel = p.relative_to(stage)
        if not p.is_file() or p.suffix not in (".ipynb", ".md", ".qmd"): continue
        if any(part.startswith(("_", ".")) for part in rel.parts): continue
        if rel.parts[0] == "reports" and not (ROOT / "artifacts" / "report" / rel.name).exists():
            continue  # a report template the pipeline has not run: no results to show
        page = page_name(rel).with_suffix(".md")
        dest = src / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix == ".ipynb":
            nb, fm = process(p)
            md = nb_to_md(exporter, nb, fm, page, dest.parent)
        else:
            text = p.read_text()
            fm = {}
            m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
            if m: fm, text = yaml.safe_load(m.group(1)) or {}, text[m.end():]
            md = _front_md(fm) + link(_quarto_md(text), page)
            # files a Markdown tutorial refers to (images) travel with it
            for f in p.parent.iterdir():
                if f.is_file() and f.suffix not in (".ipynb", ".md", ".qmd"): shutil.copy2(f, dest.parent / f.name)
        title = fm.get("title") or page.stem
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
    nav = write_pages(build / "nbs", src)
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
