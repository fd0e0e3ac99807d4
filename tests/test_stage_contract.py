"""The stage contract, checked over the registry (as scikit-learn's `check_estimator` runs over every estimator): each stage
writes exactly what it declares, its metrics.json sections and its report section, and a rerun of a finished stage is a
no-op. And the stage modules are siblings: none imports another."""
import ast, time
from pathlib import Path

import pytest

from bigmodel_nb.stage import REGISTRY, get_stage

PACKAGE = Path(__file__).resolve().parents[1]/"bigmodel_nb"
STAGE_MODULES = {entry.target.partition(":")[0].rpartition(".")[2] for entry in REGISTRY.values()}
SHARED = {"metrics.json", "logs"}  # every stage may add to these (its metrics sections, progress, its finished record)
TINY = ["data.sample=400", "data.clean.near_duplicates.enabled=false", "model.vocab_size=1000", "model.hidden_size=32",
        "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64", "model.max_length=48", "train.epochs=1",
        "evaluate.bootstrap_samples=0", "pretrain.enabled=true", "pretrain.max_texts=300", "pretrain.epochs=0.5",
        "compress.prune_amounts=[]", "compress.onnx=false", "compress.latency_repeats=3", "runtime.threads=1",
        "tune.enabled=true", "tune.trials=2", "tune.startup_trials=1"]


def bigmodel_imports(module: str) -> set[str]:
    "The bigmodel_nb modules that `module` imports anywhere in its source (module level or inside functions)."
    found = set()
    for node in ast.walk(ast.parse((PACKAGE/f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1: found.add((node.module or "").split(".")[0] or "__init__")
            elif (node.module or "").startswith("bigmodel_nb."): found.add(node.module.split(".")[1])
            if node.level == 1 and not node.module: found.update(alias.name for alias in node.names)
            if node.module == "bigmodel_nb": found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("bigmodel_nb."))
    return found


@pytest.mark.parametrize("module", sorted(STAGE_MODULES))
def test_stage_modules_import_no_other_stage(module):
    others = bigmodel_imports(module) & (STAGE_MODULES - {module})
    assert not others, f"stage module {module} imports stage module(s) {sorted(others)}: move what they share into the base"


def test_base_modules_import_no_stage():
    applications = {"pipeline", "cli", "serve", "widgets"}  # built on the stages (widgets explains with the explain stage's SHAP)
    base = [path.stem for path in PACKAGE.glob("*.py") if path.stem not in STAGE_MODULES | applications | {"_modidx", "__init__"}]
    assert {"core", "config", "rundir", "stage", "artifacts", "modeling", "heads", "training", "inference", "report"} <= set(base)
    for module in base:
        assert not bigmodel_imports(module) & STAGE_MODULES, module
    assert bigmodel_imports("heads") == set()  # copied into model folders: it must stand alone


def files_under(root: Path) -> dict[str, float]:
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def declared(stage, run) -> set[str]:
    return {run.relative(path) for path in stage.made(run)}


def inside(relative: str, places: set[str]) -> bool:
    return any(relative == place or relative.startswith(place + "/") for place in places)


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory):
    "Every registered stage run in order on a tiny config (pretraining, tuning and compression on), with what each one wrote."
    from bigmodel_nb.config import load_config, save_config
    from bigmodel_nb.rundir import RunDir, read_metrics
    run = RunDir(tmp_path_factory.mktemp("contract"))
    config = load_config(None, TINY)
    save_config(config, run.config)
    records = {}
    for name in REGISTRY:
        stage = get_stage(name)
        assert stage.enabled(config), name
        before = files_under(run.root)
        result = stage.run(config, run)
        after = files_under(run.root)
        written = {path for path, stamp in after.items() if before.get(path) != stamp}
        metrics = read_metrics(run)
        rerun_started = time.time_ns()
        rerun = stage.run(config, run)
        records[name] = dict(stage=stage, result=result, written=written, metrics=metrics, rerun=rerun,
                             after_rerun=files_under(run.root), after=after, rerun_started=rerun_started,
                             section=stage.report_section(run, metrics))
    return run, config, records


@pytest.mark.parametrize("name", list(REGISTRY))
def test_stage_writes_what_it_declares(contract_run, name):
    run, config, records = contract_run
    record = records[name]
    stage, result = record["stage"], record["result"]
    places = declared(stage, run)
    for path in stage.made(run): assert path.exists(), f"{name} declares {run.relative(path)} but did not make it"
    stray = sorted(path for path in record["written"] if not inside(path, places | SHARED))
    assert not stray, f"{name} wrote {stray}, which it does not declare in makes/figures"
    assert not result.skipped and set(result.artifacts) | set(result.figures) == places


@pytest.mark.parametrize("name", list(REGISTRY))
def test_stage_writes_its_metrics_and_report_sections(contract_run, name):
    run, config, records = contract_run
    record = records[name]
    stage, metrics = record["stage"], record["metrics"]
    from bigmodel_nb.modeling import previous_run
    optional = {"baseline": config.evaluate.baseline, "continual": previous_run(config.model.backbone) is not None}
    expected = [section for section in stage.metric_sections() if optional.get(section, True)]
    for section in expected:
        assert metrics.get(section), f"{name} wrote no '{section}' section to metrics.json"
        assert record["result"].metrics[section] == metrics[section]
    assert record["section"].startswith("<h2>"), f"{name} has no report section"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_rerun_of_a_finished_stage_is_a_no_op(contract_run, name):
    run, config, records = contract_run
    record = records[name]
    assert record["rerun"].skipped and record["rerun"].metrics == record["result"].metrics
    changed = {path for path, stamp in record["after_rerun"].items() if record["after"].get(path) != stamp}
    assert not {path for path in changed if not path.startswith("logs/")}, changed  # nothing the stage makes was touched


def test_workflow_notebooks_are_found_by_name():
    from bigmodel_nb.stage import workflow_notebook
    names = [workflow_notebook(name).stem for name in REGISTRY]
    assert [name.split("_", 1)[1] for name in names] == list(REGISTRY)
    assert names == sorted(names)  # their numbers follow the run order
