"""Code tier: the library is generated from the notebooks, and the README from index.ipynb; layers point one way."""
import filecmp
import json
import re
import shutil
import subprocess
import sys

from pathlib import Path

from conftest import ROOT, BIN


def test_flex_ml_matches_notebooks(tmp_path):
    "nbdev_export on a copy of nbs/ must reproduce flex_ml/ exactly: edit notebooks, not the library."
    for item in ("nbs", "flex_ml", "settings.ini", "setup.py", "pyproject.toml"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    subprocess.run([str(BIN / "nbdev_export")], cwd=tmp_path, check=True, capture_output=True)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "flex_ml").rglob("*.py"))
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "flex_ml").rglob("*.py"))
    assert generated == committed, "flex_ml/ has files the notebooks do not generate (or lacks some)"
    stale = [str(p) for p in committed if not filecmp.cmp(ROOT / p, tmp_path / p, shallow=False)]
    assert not stale, f"flex_ml/ is out of sync with nbs/ in {stale}: run `make export` and commit both"


def test_readme_matches_index_notebook(tmp_path):
    "README.md is generated from nbs/index.ipynb (`make readme`)."
    subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "markdown", "--log-level", "WARN",
                    str(ROOT / "nbs" / "index.ipynb"), "--output-dir", str(tmp_path), "--output", "README"],
                   check=True, capture_output=True)
    assert (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text(), \
        "README.md differs from nbs/index.ipynb: run `make readme`"


def test_library_imports_without_tensorflow():
    "Modules that do not need TensorFlow must not import it (it costs seconds)."
    code = ("import sys, flex_ml.schema, flex_ml.data, flex_ml.validate, flex_ml.split, flex_ml.features, "
            "flex_ml.evaluate, flex_ml.train, flex_ml.export, flex_ml.cli, flex_ml.report, flex_ml.monitor, "
            "flex_ml.retrain, flex_ml.score, flex_ml.runtime, flex_ml.serve, flex_ml.tune; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_openmp_threads_wait_without_spinning():
    """Issue 23: a retrain spent minutes outside its 9-second network fit, in scikit-learn's gradient boosting,
    whose OpenMP threads spin at every barrier on a shared machine (492 s against 8.9 s for one fit). Importing
    flex_ml (any verb) sets OMP_WAIT_POLICY=PASSIVE before the OpenMP runtime loads, and keeps a user's choice."""
    import os
    code = "import os, flex_ml.cli, sklearn.ensemble; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert out == ["PASSIVE"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(env, OMP_WAIT_POLICY="ACTIVE")).stdout.split()
    assert out == ["ACTIVE"]


def _imports_in_nodes(nodes) -> set[str]:
    "The flex_ml modules imported anywhere under the AST `nodes` (`from .x`, `from flex_ml.x`, `import flex_ml.x`)."
    import ast
    found = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("flex_ml."): found.add(node.module.split(".")[1])
            elif node.module == "flex_ml": found |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("flex_ml.")}
    return {m for m in found if (ROOT / "flex_ml" / f"{m}.py").exists()}


def _flex_ml_imports(module: str, verb: str | None = None) -> set[str]:
    """The flex_ml modules `module` imports, at the top or inside functions.
    For the CLI, only what one `verb` runs: the imports inside other verbs' functions do not count."""
    import ast
    tree = ast.parse((ROOT / "flex_ml" / f"{module}.py").read_text())
    def is_other_verb(node):
        return (isinstance(node, ast.FunctionDef) and node.name != verb and node.decorator_list
                and any("command" in ast.unparse(d) for d in node.decorator_list))
    return _imports_in_nodes([n for n in tree.body if not (verb and is_other_verb(n))])


def _imports_in_code(code: str) -> set[str]:
    "The flex_ml modules a piece of code imports, anywhere in it."
    import ast
    return _imports_in_nodes([ast.parse(code)])


def _notebook_imports(path: Path) -> set[str]:
    "The flex_ml modules the code cells of a notebook import (a report notebook that a stage executes)."
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return _imports_in_code("\n".join(l for l in code.splitlines() if not l.lstrip().startswith(("%", "!"))))


CLI_MODULES = ("cli", "cli_ops")  # the modules of `flex-ml` verbs: a stage runs its own verb's body, no other's


def stage_modules(name: str, stage: dict) -> set[str]:
    "Every flex_ml module the stage can run: its CLI verb's imports and its report notebooks', transitively."
    todo = list(_flex_ml_imports("cli", verb=name))
    for d in stage["deps"]:
        if d.endswith(".ipynb"): todo += _notebook_imports(ROOT / d)
    needed = {"cli"}
    while todo:
        m = todo.pop()
        if m not in needed: needed.add(m); todo += _flex_ml_imports(m, verb=name if m in CLI_MODULES else None)
    return needed


def test_every_stage_depends_on_the_code_it_runs():
    """A stage's deps list exactly the flex_ml modules it can import, transitively, and the CLI that calls it:
    a missing one leaves a stale output that `dvc status` calls up to date; an extra one re-runs the stage
    for a change that cannot affect it (an HTTP error message re-running export)."""
    import yaml
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert stage["cmd"].startswith(f"python -m flex_ml.cli {name}"), stage["cmd"]  # the copy DVC runs in, not the install
        needed = stage_modules(name, stage)
        listed = {d[len("flex_ml/"):-3] for d in stage["deps"] if d.startswith("flex_ml/")}
        assert needed <= listed, f"stage {name} runs flex_ml/{sorted(needed - listed)} but dvc.yaml does not list them"
        assert listed <= needed, f"stage {name} lists flex_ml/{sorted(listed - needed)} in dvc.yaml but never runs them"


def _module_notebooks() -> dict[str, str]:
    "Each flex_ml module and the notebook it is generated from (the header nbdev writes)."
    out = {}
    for py in (ROOT / "flex_ml").glob("*.py"):
        m = re.search(r"File to edit: \.\./nbs/(\S+?\.ipynb)", py.read_text())
        if m: out[py.stem] = m.group(1)
    return out


def test_layers_point_one_way():
    """No import cycle among flex_ml modules, and notebook numbers follow the import order: a module's
    notebook sorts after the notebooks of every module it imports (at the top or inside a function),
    so reading the notebooks in order never meets a name before its definition."""
    notebooks = _module_notebooks()
    assert {"schema", "bundle", "predlog", "reference", "serve", "monitor", "export"} <= set(notebooks)
    wrong = [f"{notebooks[m]} ({m}) imports {notebooks[d]} ({d})"
             for m in notebooks if m != "cli" for d in _flex_ml_imports(m)
             # a module may name itself: a spawned worker process finds a function by its module's name
             if d in notebooks and d != m and notebooks[d] >= notebooks[m]]
    assert not wrong, "imports that point up the notebook order (a cycle, or a misnumbered notebook): " + "; ".join(wrong)
    cli_up = [d for d in _imports_in_code((ROOT / "flex_ml/cli.py").read_text()) if notebooks[d] >= notebooks["cli"]]
    assert not cli_up, cli_up


def test_consumers_of_an_export_do_not_import_each_other():
    "serve, score, monitor and retrain share the serving bundle, the prediction log and the reference, not each other."
    consumers = {"serve", "score", "monitor", "retrain"}
    for m in consumers:
        assert not (_flex_ml_imports(m) & (consumers - {m})), f"{m} imports {_flex_ml_imports(m) & consumers}"
    # the parts split out of a consumer stay its own: no other consumer reaches in through them
    parts = {"monitor": {"monitor_input", "monitor_report"}, "retrain": {"retrain_gate"}}
    for m in consumers:
        for other, owned in parts.items():
            if other == m: continue
            assert not (_flex_ml_imports(m) & owned), f"{m} imports {_flex_ml_imports(m) & owned}, parts of {other}"
            for part in owned: assert not (_flex_ml_imports(part) & (consumers - {other})), (part, _flex_ml_imports(part))
    assert not (_flex_ml_imports("export") & (consumers | {"cli"})), _flex_ml_imports("export")
