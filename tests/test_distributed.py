"Data-parallel training: the training stage under torchrun with 2 CPU processes (gloo)."
import json
from pathlib import Path

from bigmodel_nb.config import load_config, save_config
from bigmodel_nb.stage import get_stage
from bigmodel_nb.train import run_train

TINY = ["data.sample=400", "data.clean.near_duplicates.enabled=false", "model.vocab_size=800", "model.hidden_size=32",
        "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64", "model.max_length=48", "train.epochs=1",
        "train.batch_size=16", "runtime.threads=1"]


def test_two_cpu_processes_train_one_model(tmp_path):
    "Two processes, and two restarts (seeds 42 and 43): both ranks train both, one model is kept."
    config = load_config(None, TINY + ["train.distributed.nproc_per_node=2", "train.restarts=2"])
    for stage in ("data", "tokenizer"): get_stage(stage).run(config, tmp_path)
    save_config(config, tmp_path/"config.yaml")  # the workers read the run's config from its folder
    train = run_train(config, tmp_path)["train"]

    assert train["world_size"] == 2
    assert json.loads((tmp_path/"metrics.json").read_text())["train"]["world_size"] == 2
    ranks = [json.loads((tmp_path/"logs"/"ranks"/f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["rank"] for record in ranks] == [0, 1]
    assert all(record["world_size"] == 2 and record["steps"] > 0 for record in ranks), ranks
    assert ranks[0]["pid"] != ranks[1]["pid"]
    # in each restart, each rank took half of every epoch's batches: together they cover the training split once
    train_size, restarts = train["train_examples"], train["restarts"]
    assert [row["seed"] for row in restarts] == [42, 43] and restarts[0]["steps"] == restarts[1]["steps"] == train["steps"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2 * train["steps"]
    assert 2 * 16 * (train["steps"] - 1) < train_size <= 2 * 16 * train["steps"]
    assert train["seed"] == restarts[train["selected_restart"]]["seed"]
    weights = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.safetensors"))
    assert weights == [Path("model/model.safetensors")], weights
    assert not (tmp_path/"checkpoints").exists() and not (tmp_path/".tmp-model").exists() and not (tmp_path/"restarts").exists()
    assert [record["backend"] for record in ranks] == ["gloo", "gloo"]
    # DDP, not two independent trainings: the Trainer wrapped the model, and both processes held the same weights when the
    # last checkpoint was saved (before the best one is reloaded from disk, which would make them equal anyway)
    assert [record["parallel_mode"] for record in ranks] == ["distributed", "distributed"]
    assert ranks[0]["weights_at_last_save"] == ranks[1]["weights_at_last_save"] is not None


def test_workers_started_by_hand_then_resume(cli, tmp_path):
    "The multi-node recipe of the README, on one node: stages before training, torchrun workers, then --resume."
    import subprocess, sys
    from conftest import ROOT
    run_dir = tmp_path/"run"
    off = ["compress.enabled=false", "explain.enabled=false", "audit.enabled=false", "evaluate.baseline=false",
           "evaluate.bootstrap_samples=0"]
    overrides = [part for setting in TINY + off for part in ("--set", setting)]
    first = cli("run", "configs/quick.yaml", *overrides, "--out", str(run_dir), "--until", "tokenizer")
    assert first.returncode == 0, first.stderr[-3000:]
    assert not (run_dir/"model").exists()
    workers = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                              "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:0", "--rdzv_id", "by-hand",
                              "-m", "bigmodel_nb.cli", "train-worker", str(run_dir), "--record-stage"],
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert workers.returncode == 0, workers.stderr[-3000:]
    resumed = cli("run", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "to run: evaluate" in resumed.stderr
    ranks = [json.loads((run_dir/"logs"/"ranks"/f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["weights_at_last_save"] == ranks[1]["weights_at_last_save"] is not None
    metrics = json.loads((run_dir/"metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and 0 < metrics["test"]["accuracy"] <= 1
    assert [record["stage"] for record in json.loads((run_dir/"logs"/"stages.json").read_text())] == \
        ["data", "tokenizer", "train", "evaluate"]
