"The explain stage on a copy of the finished tiny run: its files and metrics, its bounded cost, every kind of variant, repeatable results; and SHAP on linear toy models, whose attributions are known."
import json, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SMALL = ["explain.examples=1", "explain.n_samples=6", "explain.max_evals=31"]  # odd: SHAP spends evaluations in pairs
METRIC_KEYS = {"variant", "variant_source", "output", "n_texts", "n_examples", "n_samples", "max_evals", "max_chars",
               "evals_per_text", "evals_max", "seconds_per_text", "seconds_per_text_max", "warmup_seconds", "examples", "top_tokens",
               "seconds"}

@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    "A copy of the tiny run that a test may write into."
    return Path(shutil.copytree(tiny_run, tmp_path/"run"))

def explain_run(run_dir: Path, *overrides: str, force: bool = False):
    "Run the explain stage on `run_dir` with the run's config, the small settings and `overrides`."
    from bigmodel_nb.config import load_config
    from bigmodel_nb.explain import ExplainStage
    from bigmodel_nb.stage import run_stage
    return run_stage(ExplainStage(), load_config(run_dir/"config.yaml", [*SMALL, *overrides]), run_dir, force=force)

def test_stage_writes_examples_top_tokens_and_cost(run_copy):
    from bigmodel_nb.explain import EXAMPLE_KINDS, TOP_TOKEN_COLUMNS, ExplainStage
    from bigmodel_nb.rundir import RunDir
    result = explain_run(run_copy)
    metrics = result.metrics["explain"]
    assert set(metrics) == METRIC_KEYS
    assert metrics["variant"] == json.loads((run_copy/"compressed"/"selected.json").read_text())["name"]  # the served one
    assert [example["kind"] for example in metrics["examples"]] == list(EXAMPLE_KINDS)
    assert metrics["n_samples"] == 6 and metrics["n_texts"] <= 9 and metrics["max_evals"] == 31
    assert 0 < metrics["evals_per_text"] <= metrics["evals_max"] <= 31 and 0 < metrics["seconds_per_text"] <= metrics["seconds"]
    page = (run_copy/"explain"/"examples.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page and "<script" not in page
    assert all(example["text"][0] in page for example in metrics["examples"])  # the texts' (Chinese) characters are there
    table = pd.read_csv(run_copy/"explain"/"top_tokens.csv")
    assert list(table.columns) == TOP_TOKEN_COLUMNS and set(table["label"]) <= set(metrics["top_tokens"])
    assert (run_copy/"figures"/"explain_top_tokens.png").stat().st_size > 0
    assert json.loads((run_copy/"metrics.json").read_text())["explain"]["n_texts"] == metrics["n_texts"]
    section = ExplainStage().report_section(RunDir(run_copy), {"explain": metrics})
    assert "<h2>Explanations (SHAP)</h2>" in section and "data:image/png;base64," in section and "<main>" not in section
    assert explain_run(run_copy).skipped  # finished with this config: not run again

def test_model_calls_per_text_stay_within_max_evals(tiny_run):
    from bigmodel_nb.config import load_config
    from bigmodel_nb.explain import CountedModel, explain, variant_proba
    from bigmodel_nb.inference import load_variant
    config, variant = load_config(tiny_run/"config.yaml"), load_variant(tiny_run/"model")
    texts = pd.read_parquet(tiny_run/"data"/"test.parquet")["text"].sort_values(key=lambda s: -s.str.len()).head(4).tolist()
    for max_evals in (10, 25, 60):
        counted = CountedModel(variant_proba(variant, config.model.max_length))
        items = explain(texts, counted, variant.label_names, variant.tokenizer, max_evals=max_evals, max_chars=300)
        assert all(item.evals <= max_evals for item in items), [item.evals for item in items]
        assert sum(item.evals for item in items) == counted.calls <= max_evals * len(texts)
        for item in items:  # however coarse, the attributions add up to the move from the masked text's output
            assert np.allclose(item.base_values + item.values.sum(axis=0), item.probabilities, atol=1e-6)

def _add_onnx(run_dir: Path, name: str) -> None:
    from transformers import AutoModelForSequenceClassification
    from bigmodel_nb.compress import build_onnx
    from bigmodel_nb.modeling import load_tokenizer
    texts = pd.read_parquet(run_dir/"data"/"test.parquet")["text"].head(8).tolist()
    model = AutoModelForSequenceClassification.from_pretrained(run_dir/"model").eval()
    build_onnx(model, load_tokenizer(run_dir/"model"), run_dir/"compressed"/name, texts, threads=1)

def _add_averaged(run_dir: Path, name: str) -> None:
    from transformers import AutoModelForSequenceClassification
    from bigmodel_nb.compress import half_depth_student
    from bigmodel_nb.heads import AveragedClassifier
    from bigmodel_nb.modeling import load_tokenizer
    model = AutoModelForSequenceClassification.from_pretrained(run_dir/"model").eval()
    AveragedClassifier.of([model, half_depth_student(model)], seeds=[1, 2]).save_pretrained(run_dir/"compressed"/name)
    load_tokenizer(run_dir/"model").save_pretrained(run_dir/"compressed"/name)

@pytest.mark.parametrize("variant", ["fp32", "pytorch_int8", "onnx_fp32", "averaged"])
def test_every_servable_variant_is_explained(run_copy, variant):
    from bigmodel_nb.inference import load_variant
    if variant == "onnx_fp32": _add_onnx(run_copy, variant)
    if variant == "averaged": _add_averaged(run_copy, variant)
    metrics = explain_run(run_copy, f"explain.variant={variant}").metrics["explain"]
    assert metrics["variant"] == variant and metrics["evals_max"] <= 31
    loaded = load_variant(run_copy/"model" if variant == "fp32" else run_copy/"compressed"/variant)
    texts = [example["text"] for example in metrics["examples"]]
    expected = loaded.predict_proba(texts, 48).max(axis=1)  # the explained probabilities are this variant's own
    assert np.allclose([example["probability"] for example in metrics["examples"]], expected, atol=1e-4)

def test_a_missing_variant_is_named(run_copy):
    from bigmodel_nb.core import UserError
    with pytest.raises(UserError, match="variant 'onnx_int8' is not in"): explain_run(run_copy, "explain.variant=onnx_int8")

def test_same_seed_same_explanations(run_copy, tmp_path):
    other = Path(shutil.copytree(run_copy, tmp_path/"other"))
    first, second = explain_run(run_copy).metrics["explain"], explain_run(other).metrics["explain"]
    timing = ("seconds", "seconds_per_text", "seconds_per_text_max", "warmup_seconds")
    assert {k: v for k, v in first.items() if k not in timing} == {k: v for k, v in second.items() if k not in timing}
    pd.testing.assert_frame_equal(pd.read_csv(run_copy/"explain"/"top_tokens.csv"), pd.read_csv(other/"explain"/"top_tokens.csv"))
    strip_cost = lambda page: __import__("re").sub(r"\d+ model evaluations, [\d.]+ s", "", page)
    assert strip_cost((run_copy/"explain"/"examples.html").read_text()) == strip_cost((other/"explain"/"examples.html").read_text())

WEIGHTS = {"好": 2.0, "差": -2.0, "great": 1.5}

def _log_odds(texts) -> np.ndarray:
    from bigmodel_nb.explain import word_spans
    return np.array([sum(WEIGHTS.get(text[start:end], 0.0) for start, end in word_spans(text)) for text in texts])

def _logistic_toy(texts) -> np.ndarray:
    positive = 1 / (1 + np.exp(-_log_odds(texts)))
    return np.stack([1 - positive, positive], axis=1)

@pytest.mark.parametrize("text", ["这个好，那个差，还好 great food", "差差差 great great 好", "The food was great, 服务差"])
def test_linear_toy_model_gets_its_weights_back(text):
    "In log-odds the toy is additive in its words: each word's Shapley value is its weight (the mask token weighs 0)."
    from bigmodel_nb.explain import explain
    [item] = explain([text], _logistic_toy, ["负面", "正面"], max_evals=1000, link="logit")
    weights = np.array([WEIGHTS.get(token.strip(), 0.0) for token in item.tokens])
    assert "".join(item.tokens).strip() == text.strip() and np.abs(weights).sum() > 0
    np.testing.assert_allclose(item.values[:, 1], weights, atol=1e-6)
    np.testing.assert_allclose(item.values[:, 0], -weights, atol=1e-6)
    np.testing.assert_allclose(item.base_values, [0.0, 0.0], atol=1e-9)
    [in_probability] = explain([text], lambda texts: 0.5 + 0.05 * np.stack([-_log_odds(texts), _log_odds(texts)], axis=1),
                               ["负面", "正面"], max_evals=1000)  # linear in the probability itself: identity link
    np.testing.assert_allclose(in_probability.values[:, 1], 0.05 * weights, atol=1e-9)
    [wrong_link] = explain([text], _logistic_toy, ["负面", "正面"], max_evals=1000)  # the logistic toy in probabilities
    assert np.abs(wrong_link.values[:, 1] - weights).max() > 0.3  # is not additive: the weights do not come back
