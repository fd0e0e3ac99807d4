"""The run registry on real run folders: the quick run through the CLI, the tiny run built stage by stage, a pipeline run
whose data stage failed, a damaged one; `bigmodel-nb runs list/compare` as a user types them, and their usage errors."""
import io
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from bigmodel_nb.core import UserError, read_json
from bigmodel_nb.rundir import RunDir, read_metrics
from bigmodel_nb.runs import list_runs, compare_runs


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory) -> Path:
    "What the pipeline leaves when the data stage fails (its label column is missing)."
    from rich.console import Console
    from bigmodel_nb.config import load_config
    from bigmodel_nb.pipeline import run_pipeline, StageFailed
    folder = tmp_path_factory.mktemp("failed")
    pd.DataFrame({"review": ["好", "差"] * 20, "score": ["pos", "neg"] * 20}).to_csv(folder/"reviews.csv", index=False)
    config = load_config(None, ["name=broken", f"data.sources=[{{path: {folder/'reviews.csv'}}}]", "data.text_column=review",
                                "data.label_column=sentiment"])
    with pytest.raises(StageFailed): run_pipeline(config, folder/"run", console=Console(file=io.StringIO()))
    return folder/"run"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, quick_run, tiny_run, failed_run) -> Path:
    "A runs/ folder as users have one: the quick, tiny and failed runs, a damaged run and a folder that is not a run."
    folder = tmp_path_factory.mktemp("registry")
    for name, target in (("quick", quick_run[0]), ("tiny", tiny_run), ("broken", failed_run)):
        (folder/name).symlink_to(target, target_is_directory=True)
    (folder/"damaged").mkdir(); (folder/"damaged"/"metrics.json").write_text('{"test": {"accuracy": 0.9', encoding="utf-8")
    (folder/"scratch").mkdir(); (folder/"scratch"/"notes.txt").write_text("no run here", encoding="utf-8")
    return folder


def test_list_runs_reads_each_kind_of_run(registry, quick_run, tiny_run):
    assert quick_run[1].returncode == 0, quick_run[1].stderr[-2000:]
    table = list_runs(registry).set_index("name")
    assert sorted(table.index) == ["broken", "damaged", "quick", "tiny"]  # scratch/ is no run
    quick = read_metrics(quick_run[0])
    row = table.loc["quick"]
    assert (row["status"], row["reason"]) == ("finished", "")
    assert row["fingerprint"] == quick["data"]["fingerprint"] and len(row["fingerprint"]) == 64
    assert (row["test_accuracy"], row["test_macro_f1"]) == (quick["test"]["accuracy"], quick["test"]["macro_f1"])
    assert row["test_accuracy_ci"] == tuple(quick["test"]["accuracy_ci"]) and row["test_macro_f1_ci"] == tuple(quick["test"]["macro_f1_ci"])
    assert row["test_accuracy_ci"][0] <= row["test_accuracy"] <= row["test_accuracy_ci"][1]
    assert row["baseline_accuracy"] == quick["baseline"]["accuracy"]
    assert row["variant"] == quick["compress"]["selected"] == read_json(RunDir(quick_run[0]).selected)["name"]
    assert row["seconds"] == quick["run"]["seconds"] > 0
    assert row["date"] == datetime.fromtimestamp(RunDir(quick_run[0]).config.stat().st_mtime).replace(microsecond=0)
    tiny = table.loc["tiny"]  # stages run one by one up to compress: its explain and audit stages never ran
    assert tiny["status"] == "running or interrupted" and "not yet: explain, audit" in tiny["reason"], tiny["reason"]
    assert tiny["test_accuracy"] == read_metrics(tiny_run)["test"]["accuracy"] and tiny["test_accuracy_ci"] is None  # no bootstrap
    assert tiny["variant"] == read_json(RunDir(tiny_run).selected)["name"] and pd.isna(tiny["seconds"])
    broken = table.loc["broken"]
    assert broken["status"] == "failed" and "stage 'data' failed" in broken["reason"], broken["reason"]
    assert "label column 'sentiment' not found" in broken["reason"] and pd.isna(broken["variant"])
    assert table.loc["damaged", "status"] == "damaged" and "metrics.json is not valid JSON" in table.loc["damaged", "reason"]
    assert list(list_runs(registry)["date"]) == sorted(list_runs(registry)["date"], reverse=True)  # newest first


def test_compare_runs_puts_metrics_and_config_side_by_side(registry, quick_run, tiny_run):
    metrics, config = compare_runs(registry/"quick", registry/"tiny")
    quick, tiny = read_metrics(quick_run[0]), read_metrics(tiny_run)
    assert list(metrics.columns) == ["quick", "quick 95% CI", "tiny", "tiny 95% CI"]
    assert metrics.loc["test.accuracy"].tolist() == [quick["test"]["accuracy"], tuple(quick["test"]["accuracy_ci"]), tiny["test"]["accuracy"], None]
    assert metrics.loc["status", "quick"] == "finished" and metrics.loc["status", "tiny"] == "running or interrupted"
    assert metrics.loc["data.fingerprint", "quick"] == quick["data"]["fingerprint"]
    for label, scores in quick["test"]["per_class"].items():
        assert metrics.loc[f"test.per_class.{label}.f1", "quick"] == scores["f1"]
        assert metrics.loc[f"test.per_class.{label}.f1", "quick 95% CI"] == tuple(scores["ci"]["f1"])
    assert config.loc["model.hidden_size"].tolist() == [128, 32] and config.loc["name"].tolist() == ["quick", "demo"]
    assert "seed" not in config.index and "train.learning_rate" in config.index  # equal keys are left out
    with pytest.raises(UserError, match="cannot compare"): compare_runs(registry/"quick", registry/"damaged")


def test_runs_cli_prints_readable_tables(cli, registry, quick_run):
    quick = read_metrics(quick_run[0])
    listed = cli("runs", "list", str(registry))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "date", "status"] and len(lines) == 5
    quick_line = next(line for line in lines if line.startswith("quick "))
    accuracy, (low, high) = quick["test"]["accuracy"], quick["test"]["accuracy_ci"]
    assert f"{accuracy:.3f} [{low:.3f}, {high:.3f}]" in quick_line and quick["data"]["fingerprint"][:12] in quick_line, quick_line
    assert " finished " in quick_line and quick["compress"]["selected"] in quick_line
    assert "stage 'data' failed" in next(line for line in lines if line.startswith("broken "))
    assert listed.stderr == "", listed.stderr  # no traceback, and no import noise from torch or torchao
    compared = cli("runs", "compare", str(registry/"quick"), str(registry/"tiny"))
    assert compared.returncode == 0, compared.stderr
    rows = {line.split()[0]: line.split()[1:] for line in compared.stdout.splitlines() if line.strip()}
    assert rows["metric"] == ["quick", "tiny"] and rows["model.hidden_size"] == ["128", "32"]
    assert rows["test.accuracy"][:3] == [f"{accuracy:.3f}", f"[{low:.3f},", f"{high:.3f}]"]


@pytest.mark.parametrize("arguments, named", [
    (["list", "{folder}/nowhere"], "nowhere does not exist"),
    (["list", "{folder}/quick/config.yaml"], "config.yaml is a file, not a folder"),
    (["compare", "{folder}/quick", "{folder}/nowhere"], "nowhere does not exist"),
    (["compare", "{folder}/quick", "{folder}/scratch"], "scratch is not a run folder"),
    (["compare", "{folder}/quick"], "give two or more run folders")])
def test_runs_cli_bad_paths_are_usage_errors(cli, registry, arguments, named):
    result = cli("runs", *[argument.format(folder=registry) for argument in arguments])
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert named in result.stderr and "Usage: bigmodel-nb runs" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
