"""Monitoring: PSI, the rolling-window Monitor, the run's reference profile and the papermill drift report over a request log."""
import json, os, shutil, threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from bigmodel_nb.core import UserError
from bigmodel_nb.monitor import (FEATURES, LOG_KEYS, Monitor, category_profile, drift_report, monitor_command, numeric_profile, psi,
                                 read_request_log, reference_path, reference_profile, request_features, run_tokenizer)
from bigmodel_nb.rundir import RunDir, load_card

def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shifted_one():
    generator = np.random.default_rng(0)
    reference = generator.lognormal(3, 1, 5000)
    assert psi(reference, generator.lognormal(3, 1, 2000)) < 0.02
    assert psi(reference, generator.lognormal(4, 1, 2000)) > 0.5
    assert psi(numeric_profile(reference), reference) == pytest.approx(0, abs=1e-6)
    labels = category_profile(["neg"] * 300 + ["pos"] * 700, ["neg", "pos"])
    assert psi(labels, ["neg"] * 30 + ["pos"] * 70) == pytest.approx(0, abs=1e-3)
    assert psi(labels, ["neg"] * 100) > 1
    assert psi(labels, {"neg": 30, "pos": 60, "spam": 10}) > 0.25  # a label the reference never saw
    assert np.isfinite(psi(numeric_profile([0.0] * 100), [5.0] * 10))  # empty bins get epsilon, not a log of 0

def synthetic_reference(generator) -> dict:
    "A reference profile built from known distributions (no run folder needed)."
    return {"features": {"text_length": numeric_profile(generator.lognormal(4, 0.6, 4000)),
                         "unknown_rate": numeric_profile(np.where(generator.random(4000) < 0.8, 0, generator.uniform(0, 0.1, 4000))),
                         "predicted_label": category_profile(generator.choice(["neg", "pos"], 2000), ["neg", "pos"]),
                         "confidence": numeric_profile(generator.uniform(0.5, 1, 2000))}}

def reference_like_request(generator, n: int) -> dict:
    return {"text_lengths": generator.lognormal(4, 0.6, n).round().tolist(),
            "unknown_rates": np.where(generator.random(n) < 0.8, 0, generator.uniform(0, 0.1, n)).round(4).tolist(),
            "predicted": generator.choice(["neg", "pos"], n).tolist(), "confidences": generator.uniform(0.5, 1, n).round(4).tolist()}

def test_monitor_alerts_on_shifted_traffic_and_not_on_traffic_like_the_reference():
    generator = np.random.default_rng(1)
    monitor = Monitor(synthetic_reference(generator), window=400, min_texts=50)
    monitor.observe(reference_like_request(generator, 20))
    first = monitor.snapshot()
    assert first["status"] == "too few texts" and first["alerts"] == []
    assert all(feature["status"] == "too few texts" and not feature["alert"] for feature in first["features"].values())
    for _ in range(60): monitor.observe(reference_like_request(generator, 8))
    calm = monitor.snapshot()
    assert calm["alerts"] == [] and calm["texts_in_window"] == 400, calm
    assert all(feature["psi"] < 0.1 for feature in calm["features"].values()), calm
    for _ in range(50):  # very long texts full of unknown characters, all one label, all certain
        monitor.observe({"text_lengths": [5000] * 8, "unknown_rates": [0.9] * 8, "predicted": ["neg"] * 8, "confidences": [0.999] * 8})
    shifted = monitor.snapshot()
    assert shifted["status"] == "alert"
    assert {name for name, feature in shifted["features"].items() if feature["alert"]} == set(FEATURES)
    assert any(line.startswith("unknown_rate: PSI") for line in shifted["alerts"])
    assert json.loads(json.dumps(shifted)) == shifted  # JSON-serialisable as is
    assert shifted["requests_seen"] == 111 and shifted["texts_seen"] == 20 + 480 + 400

def test_monitor_is_thread_safe_and_keeps_only_the_window():
    generator = np.random.default_rng(2)
    monitor = Monitor(synthetic_reference(generator), window=1000)
    requests = [reference_like_request(generator, 5) for _ in range(400)]
    threads = [threading.Thread(target=lambda part=part: [monitor.observe(r) for r in part]) for part in np.array_split(requests, 4)]
    for thread in threads: thread.start()
    for thread in threads: thread.join()
    snapshot = monitor.snapshot()
    assert (snapshot["requests_seen"], snapshot["texts_seen"], snapshot["texts_in_window"]) == (400, 2000, 1000)
    assert all(feature["texts"] == 1000 for feature in snapshot["features"].values())

@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory):
    "A copy of the session's tiny run (the report writes into the run folder)."
    return RunDir(shutil.copytree(tiny_run, tmp_path_factory.mktemp("monitor")/"run"))

def test_reference_profile_is_json_cached_and_remade_when_the_data_changes(run_copy):
    reference = reference_profile(run_copy)
    assert list(reference["features"]) == list(FEATURES) and reference["missing"] == {}
    assert json.loads(reference_path(run_copy).read_text()) == reference
    assert set(reference["features"]["predicted_label"]["shares"]) == set(load_card(run_copy)["label_names"])
    assert reference_profile(run_copy)["created"] == reference["created"]
    later = run_copy.split("train").stat().st_mtime + 5
    os.utime(run_copy.split("train"), (later, later))  # a rewritten split: the cached reference is stale
    assert reference_profile(run_copy)["sources"]["train"]["modified"] == later
    features = request_features(run_tokenizer(run_copy), ["很好", "☃☃☃ ΩΩΩ"], [[0.3, 0.7], [0.9, 0.1]], load_card(run_copy)["label_names"])
    assert set(features) == set(LOG_KEYS) and features["unknown_rates"][1] > 0.5 and features["confidences"] == [0.7, 0.9]

def log_line(moment: datetime, **record) -> str:
    return json.dumps({"time": moment.isoformat(timespec="milliseconds"), **record}, ensure_ascii=False)

def write_log(run: RunDir) -> tuple:
    "A day of calm traffic (test texts), then six hours of long texts the tokenizer does not know; with refusals, old and malformed lines."
    tokenizer, labels = run_tokenizer(run), load_card(run)["label_names"]
    test, generator = pd.read_parquet(run.split("test")).join(pd.read_parquet(run.test_predictions)[["predicted", "confidence"]]), np.random.default_rng(0)
    k = len(labels)
    start, lines = datetime(2026, 11, 30, tzinfo=timezone.utc), []
    for index in range(30 * 8):  # 8 requests an hour for 30 hours
        moment, n = start + timedelta(minutes=7.5 * index), 8
        rows = test.iloc[generator.integers(0, len(test), n)]  # test texts with the model's own predictions: like the reference
        if index >= 24 * 8: rows = rows.assign(text="☃ΩЖ" * 400, predicted=0, confidence=0.999)
        probabilities = np.full((n, k), 0.0)
        probabilities[:] = ((1 - rows["confidence"].to_numpy()) / max(k - 1, 1))[:, None]
        probabilities[np.arange(n), rows["predicted"].to_numpy()] = rows["confidence"].to_numpy()
        features = request_features(tokenizer, rows["text"].tolist(), probabilities, labels)
        lines.append(log_line(moment, endpoint="/v1/predict", status=200, n_texts=n, latency_ms=float(generator.uniform(5, 50)), **features))
    lines += [log_line(start, endpoint="/predict", status=200, n_texts=1, latency_ms=3.0, labels={labels[0]: 1}, text_lengths=[12])] * 2
    lines += [log_line(start + timedelta(hours=3), endpoint="/v1/predict", status=422, n_texts=None, latency_ms=None, error="bad")]
    lines += ['{"time": "2026-11-30T10:', "not json at all", "[1, 2]", '{"no": "time"}']
    (run.logs/"serve.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run.logs/"serve.jsonl", 4

def test_drift_report_end_to_end(run_copy, capsys):
    log, malformed = write_log(run_copy)
    records, counts = read_request_log(log)
    assert (counts["malformed"], counts["without_features"], counts["predictions"]) == (malformed, 2, 242)
    report = monitor_command(run_copy.root, out=run_copy.root/"monitor"/"first")
    printed = capsys.readouterr().out
    assert report.exists() and report.parent == run_copy.root/"monitor"/"first" and (report.parent/"monitor.ipynb").exists()
    page = report.read_text(encoding="utf-8")
    summary = json.loads((report.parent/"summary.json").read_text())
    assert summary["counts"]["malformed"] == malformed and summary["period"] == "hour"
    assert any(line.startswith("text_length: PSI") for line in summary["alerts"]), summary["alerts"]
    assert "text_length: PSI" in page and "malformed lines (skipped)" in page and "data:image/png;base64" in page
    assert f"{malformed} malformed lines skipped" in printed and "report:" in printed
    alerting = {line[:16] for line in summary["alerts_by_period"] if " text_length: " in line or " unknown_rate: " in line}
    assert {f"2026-12-01 {hour:02d}:00" for hour in range(6)} <= alerting, alerting  # every shifted hour
    # the calm day draws on a 40-text test split against a train reference of a few hundred: some noise, far from all hours
    assert len([hour for hour in alerting if hour < "2026-12-01"]) <= 8, alerting

def test_monitor_command_refuses_missing_and_empty_inputs(run_copy, tmp_path):
    with pytest.raises(UserError, match="does not exist"): monitor_command(tmp_path/"nothing")
    with pytest.raises(UserError, match="does not exist"): monitor_command(run_copy.root, log=tmp_path/"missing.jsonl")
    (tmp_path/"empty.jsonl").write_text("\n\n")
    with pytest.raises(UserError, match="empty"): monitor_command(run_copy.root, log=tmp_path/"empty.jsonl")
    (tmp_path/"one.jsonl").write_text(log_line(datetime.now(timezone.utc), endpoint="/predict", status=200) + "\n")
    with pytest.raises(UserError, match="'hour' or 'day'"): drift_report(run_copy.root, log=tmp_path/"one.jsonl", period="week")
