"The tune stage as a user runs it: a study in the run folder, the best settings trained, a killed study resumed, two workers on one study."
import json, os, signal, subprocess, time
from pathlib import Path

import pandas as pd
import psutil

from conftest import ROOT, cli_path, run_cli

TINY = ["data.sample=600", "data.clean.near_duplicates.enabled=false", "model.vocab_size=800", "model.hidden_size=32",
        "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64", "model.max_length=48", "train.epochs=1",
        "runtime.threads=1", "evaluate.baseline=false", "evaluate.bootstrap_samples=0", "compress.enabled=false",
        "explain.enabled=false", "audit.enabled=false", "tune.enabled=true", "tune.trials=4", "tune.startup_trials=2", "name=tuned"]

def settings(*extra: str) -> list[str]:
    return [part for setting in [*TINY, *extra] for part in ("--set", setting)]

def study_of(run_dir: Path, storage: str|None = None):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if storage and storage.endswith(".log"):
        if not Path(storage).exists(): raise FileNotFoundError(storage)
        storage = JournalStorage(JournalFileBackend(storage))
    return optuna.load_study(study_name="tuned", storage=storage or f"sqlite:///{run_dir/'tune'/'optuna.db'}")

def test_tuning_picks_settings_that_the_final_training_uses(tmp_path):
    run_dir = tmp_path/"run"
    finished = run_cli("run", "configs/quick.yaml", *settings(), "--until", "train", "--out", str(run_dir))
    assert finished.returncode == 0, finished.stderr[-3000:]
    metrics = json.loads((run_dir/"metrics.json").read_text())
    tune = metrics["tune"]
    for key in ("best_value", "best_params", "n_complete", "n_pruned", "n_failed", "storage"): assert key in tune, key
    assert tune["n_complete"] + tune["n_pruned"] == 4 and tune["n_failed"] == 0 and tune["storage"] == "tune/optuna.db"
    assert set(tune["best_params"]) == {"train.learning_rate", "train.warmup_ratio", "model.dropout"}
    assert metrics["train"]["tuned_settings"] == tune["best_params"]  # the final training used the best trial's settings
    config = (run_dir/"config.yaml").read_text()
    assert "learning_rate: 0.001" in config  # the run's own config is unchanged; the settings are applied when training
    trials = pd.read_csv(run_dir/"tune"/"trials.csv")
    assert len(trials) == 4 and set(trials["state"]) <= {"complete", "pruned"}
    assert trials.loc[trials["value"].idxmax(), "trial"] == tune["best_trial"]
    assert not list((run_dir/"tune").glob("trial-*")), "trial folders are removed unless tune.keep_trials"
    for name in ("tune_history", "tune_importance", "tune_parallel", "tune_slice"):
        assert (run_dir/"figures"/f"{name}.png").stat().st_size > 5000, name
    report = (run_dir/"report.html").read_text(encoding="utf-8")
    assert "Tuning (Optuna)" in report and "Every trial" in report
    assert len(study_of(run_dir).trials) == 4  # the study in the run folder holds exactly the trials the table shows

def running_and_complete(run_dir: Path, storage: str|None = None) -> tuple[int, int]:
    from optuna.trial import TrialState
    try: trials = study_of(run_dir, storage).get_trials(deepcopy=False)
    except Exception: return 0, 0  # the study is not created yet
    return (sum(t.state == TrialState.RUNNING for t in trials), sum(t.state == TrialState.COMPLETE for t in trials))

def test_a_killed_study_resumes_with_its_finished_trials(tmp_path):
    from optuna.trial import TrialState
    run_dir = tmp_path/"run"
    with open(tmp_path/"killed.stderr", "w") as stderr:
        process = subprocess.Popen([cli_path(), "run", "configs/quick.yaml", *settings("train.epochs=3", "tune.pruner=none"),
                                    "--until", "train", "--out", str(run_dir)], cwd=ROOT, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.time() + 600
        while process.poll() is None and time.time() < deadline:
            running, complete = running_and_complete(run_dir)
            if complete >= 1 and running == 1: break
            time.sleep(0.3)
        assert process.poll() is None, (tmp_path/"killed.stderr").read_text()[-2000:]
        started = psutil.Process(process.pid).children(recursive=True)
    finally:
        if process.poll() is None: os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    before = {t.number: (t.state, t.value, t.params) for t in study_of(run_dir).get_trials()}
    interrupted = [number for number, (state, _, _) in before.items() if state == TrialState.RUNNING]
    assert len(interrupted) == 1
    deadline = time.time() + 10
    while (left := [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and time.time() < deadline:
        time.sleep(0.1)
    assert not left, "a process of the killed run is left"

    resumed = run_cli("run", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trials {interrupted[0]} were interrupted" in resumed.stderr
    after = study_of(run_dir).get_trials()
    for number, (state, value, params) in before.items():  # finished trials are kept as they were
        if state == TrialState.COMPLETE: assert (after[number].state, after[number].value, after[number].params) == (state, value, params)
    assert after[interrupted[0]].state == TrialState.FAIL
    retries = [t for t in after if t.user_attrs.get("retry_of") == interrupted[0]]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == before[interrupted[0]][2]
    tune = json.loads((run_dir/"metrics.json").read_text())["tune"]
    assert tune["n_complete"] + tune["n_pruned"] == 4 and tune["n_failed"] == 1

def test_two_workers_share_one_study(tmp_path):
    run_dir, journal = tmp_path/"run", tmp_path/"shared"/"study.log"
    prepared = run_cli("run", "configs/quick.yaml", *settings(f"tune.storage={journal}", "tune.trials=8", "train.epochs=2",
                                                                   "tune.pruner=none"),
                       "--until", "tokenizer", "--out", str(run_dir))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    # the run's own tune stage starts the study; a second worker joins once its first trial is running
    with open(tmp_path/"main.log", "w") as main_log, open(tmp_path/"worker.log", "w") as log:
        main = subprocess.Popen([cli_path(), "run", "--resume", str(run_dir)], cwd=ROOT, stdout=main_log, stderr=subprocess.STDOUT)
        worker = None
        try:
            deadline = time.time() + 600
            while main.poll() is None and time.time() < deadline and running_and_complete(run_dir, str(journal)) == (0, 0): time.sleep(0.3)
            worker = subprocess.Popen([cli_path(), "tune-worker", str(run_dir)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            main.wait(timeout=600); worker.wait(timeout=600)
        finally:
            for process in (main, worker):
                if process is not None and process.poll() is None: process.kill(); process.wait(timeout=60)
    assert main.returncode == 0, (tmp_path/"main.log").read_text()[-3000:]
    assert worker.returncode == 0, (tmp_path/"worker.log").read_text()[-3000:]
    assert "joining study tuned" in (tmp_path/"worker.log").read_text()
    trials = pd.read_csv(run_dir/"tune"/"trials.csv")
    finished = trials[trials["state"].isin(["complete", "pruned"])]
    assert len(finished) >= 8 and finished["worker"].nunique() == 2, trials
    tune = json.loads((run_dir/"metrics.json").read_text())["tune"]
    assert tune["storage"] == str(journal) and tune["n_complete"] + tune["n_pruned"] == len(finished)
