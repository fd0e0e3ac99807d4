"""The widgets driven headlessly on real runs, as a notebook user drives them: set a control's value (its observers run),
press a button, read the HTML. Checked against the model called directly."""
import re

import numpy as np
import pytest

from bigmodel_nb.core import read_json
from bigmodel_nb.inference import load_variant
from bigmodel_nb.rundir import RunDir, read_metrics, load_splits, load_card
from bigmodel_nb.widgets import Playground, RunBrowser, shown_label


def test_playground_predicts_flips_and_explains_on_the_tiny_run(tiny_run):
    run = RunDir(tiny_run)
    selected = read_json(run.selected)["name"]
    playground = Playground(tiny_run)
    assert (playground.variant.value, set(playground.variant.options)) == (selected, {"fp32", "pytorch_int8"})
    assert (playground.max_length, playground.max_evals) == (48, 40)  # the run's model.max_length and explain.max_evals
    label_names, reference = load_card(tiny_run)["label_names"], load_variant(run.variant(selected))
    texts = load_splits(tiny_run)["test"]["text"].tolist()[:5]
    for text in texts:
        playground.text.value = text
        expected = reference.predict_proba([text], 48)[0]
        np.testing.assert_allclose(playground.probabilities, expected, atol=1e-6)
        assert shown_label(playground.prediction.value) == playground.label == label_names[int(expected.argmax())]
    positive = float(playground.probabilities[1])
    below = np.floor(positive * 100) / 100  # the slider's grid points on either side of P(second label)
    playground.threshold.value = below
    assert shown_label(playground.prediction.value) == label_names[1]
    playground.threshold.value = below + 0.01
    assert shown_label(playground.prediction.value) == label_names[0]

    playground.explain_button.click()
    item = playground.explained
    assert "".join(token.strip() for token in item.tokens) == "".join(texts[-1][:playground.max_chars].split())
    assert 0 < item.evals <= 40 and item.values.shape == (len(item.tokens), 2)
    np.testing.assert_allclose(item.probabilities, playground.probabilities, atol=1e-5)
    assert playground.explanation.value.count("</span>") == len(item.tokens)
    assert f"toward <b>{label_names[0]}</b>" in playground.explanation.value  # toward the label shown under the threshold
    playground.threshold.value = below
    assert f"toward <b>{label_names[1]}</b>" in playground.explanation.value and playground.explained is item


def test_playground_variant_picker_loads_each_variant_of_the_quick_run(quick_run):
    run_dir, result = quick_run
    assert result.returncode == 0, result.stderr[-2000:]
    run, playground = RunDir(run_dir), Playground(run_dir)
    options = list(playground.variant.options)
    assert playground.variant.value == read_metrics(run_dir)["compress"]["selected"]
    assert {"fp32", "pytorch_int8", "onnx_fp32", "onnx_int8"} <= set(options), options
    text = "质量很好，物流也快，下次还来"
    assert playground.prepare([text]) == ["质量很好,物流也快,下次还来"]
    playground.text.value = text
    for name in options:
        playground.variant.value = name
        assert playground.variant_name == name and f"variant {name}" in playground.prediction.value
        # the playground prepares a typed text as the training texts were (NFKC: the full-width commas become ",")
        expected = load_variant(run.variant(name)).predict_proba(playground.prepare([text]), playground.max_length)[0]
        np.testing.assert_allclose(playground.probabilities, expected, atol=1e-5, err_msg=name)
    assert {name: playground.variants[name].runner.kind for name in ("fp32", "onnx_fp32", "onnx_int8")} == \
        {"fp32": "pytorch", "onnx_fp32": "onnx", "onnx_int8": "onnx"}
    assert playground.variants["pytorch_int8"] is not playground.variants["fp32"]


def test_run_browser_sorts_and_compares_real_runs(tmp_path, quick_run, tiny_run):
    for name, target in (("quick", quick_run[0]), ("tiny", tiny_run)): (tmp_path/name).symlink_to(target, target_is_directory=True)
    (tmp_path/"corrupt").mkdir(); (tmp_path/"corrupt"/"metrics.json").write_text("[1, 2", encoding="utf-8")
    accuracy = {"quick": read_metrics(quick_run[0])["test"]["accuracy"], "tiny": read_metrics(tiny_run)["test"]["accuracy"]}
    browser = RunBrowser(tmp_path)
    shown = lambda: re.findall(r"<td>(quick|tiny|corrupt)</td>", browser.table.value)
    assert sorted(shown()) == ["corrupt", "quick", "tiny"]
    for descending in (True, False):
        browser.sort_by.value, browser.descending.value = "test accuracy", descending
        order = shown()
        assert order[-1] == "corrupt"  # no score: last either way
        assert [accuracy[name] for name in order[:2]] == sorted(accuracy.values(), reverse=descending)
    quick = read_metrics(quick_run[0])["test"]
    assert f"{quick['accuracy']:.3f} [{quick['accuracy_ci'][0]:.3f}, {quick['accuracy_ci'][1]:.3f}]" in browser.table.value
    browser.picker.value = (str(tmp_path/"quick"), str(tmp_path/"tiny"))
    comparison = browser.comparison.value
    assert "<th>quick</th>" in comparison and "<th>tiny</th>" in comparison and "model.hidden_size" in comparison
    assert re.search(r"<th>test.accuracy</th>\s*<td>" + re.escape(f"{quick['accuracy']:.3f} ["), comparison), comparison
    browser.picker.value = (str(tmp_path/"quick"), str(tmp_path/"corrupt"))
    assert "cannot compare" in browser.comparison.value and "not valid JSON" in browser.comparison.value
