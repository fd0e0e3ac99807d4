"Data-parallel training: the training stage under torchrun with 2 CPU processes (gloo)."
import json
from pathlib import Path

from bigmodel_nb.config import load_config, save_config
from bigmodel_nb.data import run_data
from bigmodel_nb.tokenizer import run_tokenizer
from bigmodel_nb.train import run_train

TINY = ["data.sample=400", "data.clean.near_duplicates.enabled=false", "model.vocab_size=800", "model.hidden_size=32",
        "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64", "model.max_length=48", "train.epochs=1",
        "train.batch_size=16", "train.threads=1"]


def test_two_cpu_processes_train_one_model(tmp_path):
    config = load_config(None, TINY + ["train.distributed.nproc_per_node=2"])
    run_data(config, tmp_path)
    run_tokenizer(config, tmp_path)
    save_config(config, tmp_path/"config.yaml")  # the workers read the run's config from its folder
    result = run_train(config, tmp_path)

    assert result.metrics["world_size"] == 2
    assert json.loads((tmp_path/"metrics.json").read_text())["train"]["world_size"] == 2
    ranks = [json.loads((tmp_path/"logs"/"ranks"/f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [record["rank"] for record in ranks] == [0, 1]
    assert all(record["world_size"] == 2 and record["steps"] > 0 for record in ranks), ranks
    assert ranks[0]["pid"] != ranks[1]["pid"]
    # each rank took half of every epoch's batches: together they cover the training split once
    train_size = result.metrics["train_examples"]
    assert ranks[0]["steps"] == ranks[1]["steps"] == result.metrics["steps"]
    assert 2 * 16 * (ranks[0]["steps"] - 1) < train_size <= 2 * 16 * ranks[0]["steps"]
    weights = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*.safetensors"))
    assert weights == [Path("model/model.safetensors")], weights
    assert not (tmp_path/"checkpoints").exists() and not (tmp_path/".tmp-model").exists()
    assert [record["backend"] for record in ranks] == ["gloo", "gloo"]
