"""End to end: the real DVC pipeline on the real data, in a scratch copy of the project.
The credit run uses the committed params.yaml (the README's main job); the bank-marketing run
proves a second dataset needs only a schema and params."""
import json

import pytest

from conftest import ROOT, project_copy, run  # credit_project: conftest

pytestmark = pytest.mark.slow


def test_repro_produces_every_stage(credit_project):
    p, r = credit_project
    for stage in ("validate", "split", "profile", "train", "evaluate", "export", "report"):
        assert f"Running stage '{stage}'" in r.stdout
    m = json.loads((p / "artifacts/evaluate/live/metrics.json").read_text())
    for name in ("model", "baseline_gbdt", "baseline_logistic"):
        assert set(m["test"][name]) >= {"auc", "pr_auc", "ks", "brier", "log_loss", "accuracy", "precision", "recall"}
    assert m["test"]["model"]["auc"] > 0.76  # the real figure is reported by benchmarks/pipeline.py
    v = json.loads((p / "artifacts/validate/summary.json").read_text())
    assert v["rows_in"] == v["accepted"] + v["quarantined"] == 30000


def test_second_repro_does_nothing_and_status_is_clean(credit_project):
    p, _ = credit_project
    r = run(["dvc", "repro"], p)
    assert "Running stage" not in r.stdout and "up to date" in r.stdout
    assert "up to date" in run(["dvc", "status"], p).stdout


def test_the_same_inputs_export_and_report_the_same_bytes(credit_project):
    """The export (SavedModel, metadata, model card) and the executed report, forced to run again in a
    fresh process, hash as before: dvc.lock does not change, so nothing downstream re-runs. Committing
    the results first (as a team does) changes nothing either: the export records the last commit that
    changed the pipeline's inputs, not the one that recorded its outputs."""
    import difflib
    p, _ = credit_project
    before = (p / "dvc.lock").read_text()
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"]):
        run(cmd, p)
    run(["dvc", "repro", "-f", "-s", "export"], p)
    run(["dvc", "repro", "-f", "-s", "report"], p)
    after = (p / "dvc.lock").read_text()
    assert after == before, "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), n=1))


def test_dvc_metrics_and_plots(credit_project):
    p, _ = credit_project
    out = run(["dvc", "metrics", "show", "--json"], p).stdout
    flat = json.dumps(json.loads(out))
    assert '"baseline_gbdt"' in flat and '"auc"' in flat
    table = run(["dvc", "metrics", "show"], p).stdout
    assert "test.model.auc" in table and "test.baseline_gbdt.auc" in table
    # issue 23: `dvc metrics show --md` is one row 150 columns wide; `flex-ml metrics` fits a terminal
    summary = run(["flex-ml", "metrics"], p).stdout
    lines = summary.splitlines()
    assert lines[0].split() == ["model", "baseline_gbdt", "baseline_logistic"] and max(map(len, lines[:-2])) <= 100, summary
    auc_test, auc_valid = lines[1].split(), lines[2].split()
    assert auc_test[:2] == ["AUC", "test"] and auc_test[3].startswith("(0.7") and auc_valid[0] == "valid", summary
    m = json.loads((p / "artifacts/evaluate/live/metrics.json").read_text())
    assert auc_test[2] == f"{m['test']['model']['auc']:.4f}" and "test auc model minus gbdt" in summary
    run(["dvc", "plots", "show", "-o", "plots_html"], p)
    assert (p / "plots_html" / "index.html").exists()


def test_export_is_self_contained_and_parity_holds(credit_project):
    from flex_ml.bundle import check_parity, load_serving_function
    from flex_ml.schema import load_schema
    p, _ = credit_project
    m = p / "artifacts/model"
    for f in ("saved_model.pb", "model.keras", "schema.yaml", "feature_stats.json", "golden_examples.json",
              "metadata.json", "model_card.md"):
        assert (m / f).exists(), f
    golden = json.loads((m / "golden_examples.json").read_text())
    assert check_parity(load_serving_function(m), golden, load_schema(m / "schema.yaml")) <= 1e-6
    meta = json.loads((m / "metadata.json").read_text())
    assert meta["data"]["sha256"] == "af6aa9d50511471c11fedd691155d36b5f2c81baa778b274118976ad5e750d59"
    assert meta["git"]["commit"] and meta["params"]["train"]["seed"] == 42
    card = (m / "model_card.md").read_text()
    assert "## Intended use" in card and "## Fairness slices" in card and "SEX" in card
    # issue 23: the times are named for what they hold; a clean tree's export records no build time
    # (it would change the bytes at every `dvc repro -f`), and says so
    assert "created" not in meta and meta["commit_date"] == meta["git"]["date"] and meta["built_at"] is None
    assert f"committed {meta['commit_date']}" in card and "build time not recorded" in card
    html = (p / "artifacts/report/evaluation.html").read_text()
    assert "Fairness slices" in html and "data:image/png;base64" in html
    assert 'src="http' not in html  # a standalone page: no script from a CDN (it opens offline)


def test_a_build_time_is_recorded_where_the_builder_asks(credit_project, tmp_path):
    "SOURCE_DATE_EPOCH (the reproducible-builds convention) sets `built_at`; `commit_date` stays the commit's."
    p, _ = credit_project
    run(["flex-ml", "export", "--out", str(tmp_path / "model")], p, env={"SOURCE_DATE_EPOCH": "1767323045"})
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["built_at"] == "2026-01-02T03:04:05+00:00" and meta["commit_date"] == meta["git"]["date"]
    assert "built at 2026-01-02T03:04:05+00:00" in (tmp_path / "model" / "model_card.md").read_text()


def test_data_report_profiles_every_model_input(credit_project):
    """The profile stage's report (papermill) names every feature and derived feature of the contract,
    with the target's rate by value plotted, and the raw rows reconciled (in = accepted + quarantined)."""
    import nbformat
    from flex_ml.schema import load_schema
    p, _ = credit_project
    html = (p / "artifacts/report/data.html").read_text()
    assert "Rate of the target by value" in html and "data:image/png;base64" in html and "Traceback" not in html
    assert 'src="http' not in html
    nb = nbformat.read(p / "artifacts/report/data.ipynb", as_version=4)
    table = next(o["data"]["text/html"] for c in nb.cells for o in c.get("outputs", []) if "T_profile" in o.get("data", {}).get("text/html", ""))
    schema = load_schema(p / "schemas/credit_default.yaml")
    for name in [c.name for c in schema.features] + [d.name for d in schema.derived]:
        assert f">{name}</th>" in table, name
    assert ">SEX</th>" not in table  # kept out of the model: shown only among the protected groups


def test_a_failed_export_leaves_no_folder_that_looks_like_an_export(credit_project, tmp_path):
    from flex_ml.export import run_export
    from flex_ml.schema import FlexMLError
    p, _ = credit_project
    a = p / "artifacts"
    out = tmp_path / "model"
    with pytest.raises(FlexMLError, match="parity"):  # an impossible tolerance: the parity check fails
        run_export(a / "train", a / "evaluate", a / "validate", a / "split", p / "schemas/credit_default.yaml",
                   p / "data/credit-default/default_of_credit_card_clients.csv", out, {"export": {"parity_tolerance": -1.0}})
    assert not out.exists() and not (tmp_path / "model.partial").exists()


def test_dvc_exp_run_with_a_changed_param(credit_project):
    p, _ = credit_project
    r = run(["dvc", "exp", "run", "-S", "train.epochs=2", "--name", "two-epochs"], p)
    assert "Running stage 'train'" in r.stdout and "Running stage 'validate'" not in r.stdout
    shown = run(["dvc", "exp", "show", "--json"], p).stdout
    assert "two-epochs" in shown


def test_bank_marketing_needs_only_schema_and_params(tmp_path):
    p = project_copy(tmp_path, params=ROOT / "configs" / "bank_marketing" / "params.yaml")
    run(["flex-ml", "fetch", "--timeout", "5"], p)
    run(["dvc", "repro"], p)
    split = json.loads((p / "artifacts/split/summary.json").read_text())
    assert split["strategy"] == "time"
    assert split["train"]["last_line"] < split["valid"]["first_line"] < split["test"]["first_line"]
    assert split["test"]["last_line"] == 41189
    stats = json.loads((p / "artifacts/train/feature_stats.json").read_text())
    assert "duration" not in stats and "marital" not in stats and "emp.var.rate" in stats
    m = json.loads((p / "artifacts/evaluate/live/metrics.json").read_text())
    # The last 15 % of calls (late 2010) live in another economy (euribor near 0.7 %, a subscription rate
    # near 40 % against 6 % in training): every model, baselines included, degrades there. That real
    # drift is what monitoring is for; here we only require signal where the world is still similar.
    assert m["valid"]["model"]["auc"] > 0.6 and m["test"]["model"]["auc"] > 0.5
    assert set(m["test"]) == {"model", "baseline_logistic", "baseline_gbdt"}
    golden = json.loads((p / "artifacts/model/golden_examples.json").read_text())
    assert isinstance(golden[0]["record"]["job"], str) and "emp.var.rate" in golden[0]["record"]
    # the contract names its own decisions (whom to call), used by score, the service and the model card
    import pandas as pd
    raw = (p / "data/bank-marketing/bank-additional-full.csv").read_text().splitlines()
    (p / "sample.csv").write_text("\n".join(raw[:1] + raw[-400:]) + "\n")
    run(["flex-ml", "score", "sample.csv", "--out", "scores.parquet", "--no-progress"], p)
    assert set(pd.read_parquet(p / "scores.parquet")["decision"]) == {"call", "skip"}
    assert "threshold is `call`, below it `skip`" in (p / "artifacts/model/model_card.md").read_text()
    assert ">euribor3m</th>" in (p / "artifacts/report/data.html").read_text()  # the data report, from the bank contract


def test_the_readme_way_back_from_another_datasets_params(credit_project):
    """Issue 23: the bring-your-own example overwrote the tracked params.yaml and the committed credit
    outputs, and nothing said how to go back. The README's command must restore both."""
    import shutil
    p, _ = credit_project
    readme = (ROOT / "README.md").read_text()
    back = "git checkout HEAD -- params.yaml dvc.lock artifacts/ && dvc checkout"
    assert back in readme and "git worktree add ../flex_ml-bank" in readme
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"]):
        run(cmd, p, check=False)  # the credit outputs committed, as in a clone (nothing to commit if done before)
    shutil.copy(p / "configs/bank_marketing/params.yaml", p / "params.yaml")
    run(["dvc", "repro", "validate"], p)  # the other dataset's first stage: tracked files change
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], p).stdout.strip()
    run(back, p)
    assert run(["git", "status", "--porcelain", "--untracked-files=no"], p).stdout.strip() == ""
    assert "up to date" in run(["dvc", "status"], p).stdout
