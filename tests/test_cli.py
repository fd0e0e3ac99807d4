"End-to-end: the CLI as a user types it, on the quick config and on bad input."
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

def test_quick_config_end_to_end(quick_run):
    # with a short masked-LM pretraining stage (1,500 People's Daily pieces + the train texts), so every stage runs
    run_dir, result = quick_run
    assert result.returncode == 0, result.stderr[-3000:]
    for path in ["report.html", "metrics.json", "config.yaml", "data/train.parquet", "data/valid.parquet",
                 "data/test.parquet", "data/card.json", "data/dropped.parquet", "model/model.safetensors", "model/config.json",
                 "tokenizer/tokenizer.json", "logs/stages.json"]:
        assert (run_dir/path).exists(), path
    html_notebooks = sorted(p.name for p in (run_dir/"notebooks").glob("*.html"))
    assert html_notebooks == ["10_data.html", "20_tokenizer.html", "30_pretrain.html", "40_train.html", "50_evaluate.html", "60_compress.html",
                              "70_explain.html", "75_audit.html"]
    metrics = json.loads((run_dir/"metrics.json").read_text())
    assert 0.5 < metrics["test"]["accuracy"] <= 1 and 0 < metrics["test"]["macro_f1"] <= 1
    assert metrics["run"]["status"] == "ok"
    pretrain = metrics["pretrain"]
    assert pretrain["valid_perplexity"] < pretrain["valid_perplexity_before"]
    assert pretrain["sources"]["peoples-daily-1998"]["texts"] == 19484 and pretrain["unlabeled_texts"] == 1500
    assert metrics["train"]["started_from"] == "pretrained" and (run_dir/"pretrained"/"model.safetensors").exists()
    assert metrics["train"]["world_size"] == 1 and metrics["train"]["samples_per_second"] > 0
    compress = metrics["compress"]
    assert compress["selected"] in compress["variants"] and "fp32" in compress["variants"]
    assert (run_dir/"compressed"/"selected.json").exists()
    card = metrics["data"]
    assert card["rows_read"] == card["rows_kept"] + sum(card["dropped"].values())
    for split in ("train", "valid", "test"):
        frame = pd.read_parquet(run_dir/"data"/f"{split}.parquet")
        assert list(frame.columns) == ["text", "source", "source_row", "label"] and len(frame) == card["split_sizes"][split]
    report = (run_dir/"report.html").read_text()
    assert "data:image/png;base64," in report and "https://" not in report and "Masked-LM pretraining" in report
    assert f"{metrics['test']['accuracy']:.4g}" in report
    # the explanations and the audit: their sections, and the verdicts on the report's first lines
    assert metrics["explain"]["n_texts"] > 0 and (run_dir/"explain"/"examples.html").exists()
    verdicts = {check: metrics["audit"][check]["verdict"] for check in ("fairness", "robustness", "privacy")}
    assert set(verdicts.values()) <= {"pass", "warn", "fail", "skipped"}, verdicts
    assert "Explanations (SHAP)" in report and '<a id="audit"></a>Audit' in report
    assert report.index('id="model-card"') < report.index('<span class="verdict') < report.index("<h2>Data")
    # the model card opens the report; model_card.md holds the same facts
    test, model_card = metrics["test"], (run_dir/"model_card.md").read_text(encoding="utf-8")
    accuracy = f"{test['accuracy']:.4g} [{test['accuracy_ci'][0]:.3g}, {test['accuracy_ci'][1]:.3g}]"
    assert accuracy in report[:report.index("<h2>Data")]
    escaped = accuracy.replace("[", "\\[").replace("]", "\\]")
    for fact in (f"**test accuracy**: {escaped} on", f"**served variant**: {compress['selected']}", f"**fairness**: **{verdicts['fairness']}**",
                 "[notebooks/75_audit.html](notebooks/75_audit.html)"):
        assert fact in model_card, fact
    assert "@font-face{font-family:'bigmodel-cjk'" in report  # the Chinese texts render without a CJK font
    # papermill injected the real parameters: the executed notebook ran on this run folder, not on a demo
    executed = (run_dir/"notebooks"/"10_data.ipynb").read_text()
    assert "injected-parameters" in executed and str(run_dir) in executed

def test_bad_config_value_fails_before_work(cli, tmp_path):
    run_dir = tmp_path/"bad"
    result = cli("run", "configs/quick.yaml", "--set", "train.epochs=lots", "--out", str(run_dir))
    assert result.returncode != 0
    assert "train.epochs" in result.stderr and "valid number" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_dir.exists()  # nothing started

def test_unknown_key_is_named(cli):
    result = cli("run", "configs/quick.yaml", "--set", "train.epoch=2")
    assert result.returncode != 0 and "train.epoch: unknown key" in result.stderr
    assert "Traceback" not in result.stderr

def test_missing_column_names_stage_file_and_columns(cli, tmp_path):
    csv = tmp_path/"reviews.csv"
    pd.DataFrame({"review": ["好", "差"] * 20, "score": ["pos", "neg"] * 20}).to_csv(csv, index=False)
    config = tmp_path/"reviews.yaml"
    config.write_text(f"name: reviews\ndata:\n  sources:\n    - path: {csv}\n  text_column: review\n  label_column: sentiment\n")
    run_dir = tmp_path/"run"
    result = cli("run", str(config), "--out", str(run_dir))
    assert result.returncode != 0
    message = result.stderr
    assert "stage 'data' failed" in message and "label column 'sentiment' not found" in message
    assert "columns are: review, score" in message and "reviews.csv" in message
    assert "Traceback" not in message + result.stdout
    # what the run made so far is kept, and the report says what failed
    assert (run_dir/"config.yaml").exists() and (run_dir/"notebooks"/"10_data.html").exists()
    assert "This run failed" in (run_dir/"report.html").read_text()
