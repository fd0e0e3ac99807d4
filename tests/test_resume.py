"Resume: SIGKILL a run during training, after its first committed checkpoint, then `bigmodel-nb run --resume` finishes it."
import json, math, os, signal, subprocess, time
from pathlib import Path

from conftest import ROOT, cli_path, run_cli

SETTINGS = ["data.sample=1000", "data.clean.near_duplicates.enabled=false", "model.vocab_size=1500", "model.hidden_size=64",
            "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=128", "model.max_length=64",
            "train.epochs=8", "train.evals_per_epoch=4", "train.batch_size=16", "train.learning_rate=2e-3",
            "train.early_stopping_patience=0", "runtime.threads=1", "evaluate.baseline=false", "evaluate.bootstrap_samples=0",
            "compress.enabled=false", "name=resume"]
OVERRIDES = [part for setting in SETTINGS for part in ("--set", setting)]


def committed_checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir/"checkpoints"
    return sorted(folder.glob("checkpoint-*/manifest.json")) if folder.is_dir() else []


def test_sigkill_during_training_then_resume(tmp_path):
    from bigmodel_nb.artifacts import checkpoint_is_complete

    # the same config, uninterrupted: the reference
    reference = run_cli("run", "configs/quick.yaml", *OVERRIDES, "--out", str(tmp_path/"whole"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    # killed: the CLI's process group gets SIGKILL once a checkpoint is committed. The papermill kernel runs in a session of
    # its own (jupyter_client starts it so); it notices within a second that its parent is gone and exits (ipykernel's
    # parent poller). Training is long enough (8 epochs, about 3 s here) that it cannot finish in that second.
    run_dir = tmp_path/"killed"
    process = subprocess.Popen([cli_path(), "run", "configs/quick.yaml", *OVERRIDES, "--out", str(run_dir)], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not committed_checkpoints(run_dir) and process.poll() is None and time.time() < deadline: time.sleep(0.2)
        assert process.poll() is None, "the run ended before its first checkpoint; make training longer"
        assert committed_checkpoints(run_dir), "no checkpoint within 10 minutes"
    finally:
        if process.poll() is None: os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    time.sleep(3)  # the orphaned kernel's parent poller checks once a second
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
