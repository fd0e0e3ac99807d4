"Stopping a run: SIGKILL during training (no process of it is left), then `bigmodel-nb run --resume` finishes it; SIGTERM stops it cleanly."
import json, math, os, signal, subprocess, time
from pathlib import Path

import psutil

from conftest import ROOT, cli_path, run_cli

SETTINGS = ["data.sample=1000", "data.clean.near_duplicates.enabled=false", "model.vocab_size=1500", "model.hidden_size=64",
            "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=128", "model.max_length=64",
            "train.epochs=8", "train.evals_per_epoch=4", "train.batch_size=16", "train.learning_rate=2e-3",
            "train.early_stopping_patience=0", "runtime.threads=1", "evaluate.baseline=false", "evaluate.bootstrap_samples=0",
            "compress.enabled=false", "explain.enabled=false", "audit.enabled=false", "name=resume"]
OVERRIDES = [part for setting in SETTINGS for part in ("--set", setting)]


def committed_checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir/"checkpoints"
    return sorted(folder.glob("checkpoint-*/manifest.json")) if folder.is_dir() else []


def descendants(pid: int) -> list[psutil.Process]:
    "Every process `pid` started, and they started (the papermill kernel, ...)."
    return psutil.Process(pid).children(recursive=True)

def still_running(processes: list[psutil.Process], within: float = 10.0) -> list[int]:
    "The pids of `processes` still running (not zombies) after waiting up to `within` seconds for them to end."
    deadline = time.time() + within
    while True:
        alive = [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.time() > deadline: return alive
        time.sleep(0.1)

def start_and_wait_for_a_checkpoint(run_dir: Path) -> subprocess.Popen:
    "`bigmodel-nb run` in a session of its own, returned once training has committed its first checkpoint."
    with open(run_dir.parent/f"{run_dir.name}.stderr", "w") as stderr:  # a file: a pipe nobody reads could fill and block the run
        process = subprocess.Popen([cli_path(), "run", "configs/quick.yaml", *OVERRIDES, "--out", str(run_dir)], cwd=ROOT,
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 600
    while not committed_checkpoints(run_dir) and process.poll() is None and time.time() < deadline: time.sleep(0.2)
    if process.poll() is not None or not committed_checkpoints(run_dir):
        if process.poll() is None: os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"no checkpoint while the run was going (exit status {process.wait(timeout=60)}): "
                             f"{(run_dir.parent/f'{run_dir.name}.stderr').read_text()[-2000:]}")
    return process

def test_sigterm_stops_the_run_and_its_kernel(tmp_path):
    run_dir = tmp_path/"stopped"
    process = start_and_wait_for_a_checkpoint(run_dir)
    started = descendants(process.pid)
    assert started, "the run has no kernel process"
    process.terminate()  # SIGTERM to the CLI alone, as `kill PID` sends it
    try: process.wait(timeout=120)
    finally:
        if process.poll() is None: os.killpg(process.pid, signal.SIGKILL)
    stderr = (run_dir.parent/"stopped.stderr").read_text()
    assert process.returncode == 130, stderr[-2000:]
    assert "train interrupted" in stderr and f"continue with: bigmodel-nb run --resume {run_dir}" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert still_running(started) == [], "a process of the stopped run is still running"
    assert json.loads((run_dir/"logs"/"stages.json").read_text())[-1]["status"] == "interrupted"
    assert json.loads((run_dir/"metrics.json").read_text())["run"]["status"] == "interrupted"

def test_sigkill_during_training_then_resume(tmp_path):
    from bigmodel_nb.artifacts import checkpoint_is_complete

    # the same config, uninterrupted: the reference
    reference = run_cli("run", "configs/quick.yaml", *OVERRIDES, "--out", str(tmp_path/"whole"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    # killed: the CLI's process group gets SIGKILL once a checkpoint is committed. The papermill kernel runs in a session of
    # its own (jupyter_client starts it so); it notices within a second that its parent is gone and exits (ipykernel's
    # parent poller). Training is long enough (8 epochs, about 3 s here) that it cannot finish in that second.
    run_dir = tmp_path/"killed"
    process = start_and_wait_for_a_checkpoint(run_dir)
    started = descendants(process.pid)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    # the kernel runs in a session of its own (jupyter_client starts it so), out of reach of the group's SIGKILL; it gets a
    # SIGKILL of its own the moment its parent ends (die_with_parent), and so would anything it started
    assert started and still_running(started) == [], "a process of the killed run is still running"
    assert not (run_dir/"logs"/"finished"/"train.json").exists(), "the orphaned kernel finished training: make training longer"
    assert not (run_dir/"model"/"model.safetensors").exists() and not (run_dir/"report.html").exists()
    stages = json.loads((run_dir/"logs"/"stages.json").read_text())
    assert [record["stage"] for record in stages] == ["data", "tokenizer"]
    # no committed checkpoint is corrupt: each matches its manifest, file by file
    for manifest in committed_checkpoints(run_dir): assert checkpoint_is_complete(manifest.parent), manifest.parent

    resumed = run_cli("run", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and "to run: train, evaluate" in resumed.stderr
    whole, metrics = (json.loads((folder/"metrics.json").read_text()) for folder in (tmp_path/"whole", run_dir))
    assert metrics["train"]["resumed_from"] and "checkpoint-" in metrics["train"]["resumed_from"]
    assert metrics["train"]["steps"] == whole["train"]["steps"]
    assert metrics["run"]["status"] == "ok" and metrics["run"]["stages"]["data"]["status"] == "ok"
    # "within noise": the runs share data and tokenizer (both reproducible); the resumed one restores the RNG and data order
    # from the checkpoint but need not retrace the uninterrupted run bit for bit; allow 3 standard errors of the difference
    # of two accuracies on this test split
    n, p = metrics["data"]["split_sizes"]["test"], whole["test"]["accuracy"]
    tolerance = 3 * math.sqrt(2 * p * (1 - p) / n)
    assert abs(metrics["test"]["accuracy"] - p) <= tolerance, (metrics["test"]["accuracy"], p, tolerance)
    assert (run_dir/"model"/"manifest.json").exists() and checkpoint_is_complete(run_dir/"model")
    assert not (run_dir/"checkpoints").exists() and (run_dir/"report.html").exists()
