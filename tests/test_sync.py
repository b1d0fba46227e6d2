"""Code tier: the library is generated from the notebooks, and the README from index.ipynb."""
import filecmp
import shutil
import subprocess
import sys

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
            "flex_ml.retrain, flex_ml.score, flex_ml.runtime, flex_ml.serve; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
