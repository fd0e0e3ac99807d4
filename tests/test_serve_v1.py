"""The versioned serving API (issue "Serving and monitoring"): micro-batching, back-pressure (503), deadlines (504), graceful
shutdown with requests in flight, digests of every loaded file, /v1/explain, /v1/model, /v1/monitor and /metrics.

In process (FastAPI app, httpx over ASGI) where a socket adds nothing; a real `bigmodel-nb serve` process, stopped by its PID,
for startup refusals, shutdown and --workers.
"""
import asyncio, json, os, queue, shutil, signal, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, cli_path
from test_serve import read_lines, wait_for_startup, stop

KEY = "v1-test-key"

def texts_of(run_dir: Path) -> list[str]:
    return pd.read_parquet(run_dir/"data"/"test.parquet")["text"].tolist()

def samples(exposition: str) -> dict:
    "Every sample of a Prometheus text exposition: (name, sorted label items) -> value."
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}

def slowed(app, seconds: float):
    "Make each model call of `app`'s batcher take `seconds` longer (a slow model, without a big one)."
    batcher = app.state.served.batcher
    inner = batcher.predict
    batcher.predict = lambda texts: (time.sleep(seconds), inner(texts))[1]

async def post_all(app, path: str, bodies: list, headers: dict|None = None) -> list[httpx.Response]:
    "POST each body to `app` at once, in process."
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as client:
        return await asyncio.gather(*(client.post(path, json=body, headers=headers) for body in bodies))

def _client(app):
    "An in-process client of `app`."
    from fastapi.testclient import TestClient
    return TestClient(app)

@pytest.fixture
def make_app(tiny_run, tmp_path):
    "create_app on the tiny run (a log of its own); every app made is closed after the test."
    from bigmodel_nb.serve import create_app
    apps = []
    def make(run_dir: Path = tiny_run, **settings):
        apps.append(create_app(run_dir, log_path=tmp_path/f"serve{len(apps)}.jsonl", **settings))
        return apps[-1]
    yield make
    for app in apps: app.state.serving.close()

def test_concurrent_clients_are_batched_and_answered_as_offline(make_app, tiny_run):
    from bigmodel_nb.compress import torch_threads
    from bigmodel_nb.inference import load_variant
    from bigmodel_nb.config import load_config
    app, texts = make_app(max_wait_ms=200), texts_of(tiny_run)
    served, config = app.state.served, load_config(tiny_run/"config.yaml")
    with _client(app) as client:
        single = client.post("/v1/predict", json={"texts": texts})
    with torch_threads(1):  # the served probabilities are load_variant's, number for number, for a request that runs alone
        offline = load_variant(served.choice.folder).predict_proba(texts, config.model.max_length, config.runtime.batch_size)
    labels = served.predictor.label_names
    np.testing.assert_array_equal(np.array([[p["probabilities"][name] for name in labels] for p in single.json()["predictions"]]), offline)

    answers = asyncio.run(post_all(app, "/v1/predict", [{"texts": [text]} for text in texts[:8]]))
    assert [answer.status_code for answer in answers] == [200] * 8
    for text, answer in zip(texts, answers):  # batched with others: fp32 moves by ~1e-7, an int8 variant by up to ~1e-2
        row = [answer.json()["predictions"][0]["probabilities"][name] for name in labels]
        np.testing.assert_allclose(row, offline[texts.index(text)], atol=0.05)
    with _client(app) as client: exposition = client.get("/metrics").text
    values = samples(exposition)
    assert values[("bigmodel_batch_requests_sum", ())] == 9  # the single request, then the 8
    assert values[("bigmodel_batch_requests_count", ())] < 9  # so some model calls held several requests
    assert values[("bigmodel_requests_total", (("route", "/v1/predict"), ("status", "200")))] == 9

def test_served_texts_are_prepared_as_the_training_texts_were(make_app, tiny_run):
    "A pasted text with full-width punctuation, markup and a phone number is normalised and redacted before the model sees it."
    from bigmodel_nb.compress import torch_threads
    from bigmodel_nb.config import load_config
    from bigmodel_nb.inference import load_variant
    app, config = make_app(), load_config(tiny_run/"config.yaml")
    raw, prepared = "房间很大，很干净！ <b>电话13812345678</b>", "房间很大,很干净! 电话[PHONE]"
    with _client(app) as client: answer = client.post("/v1/predict", json={"texts": [raw]})
    assert answer.status_code == 200
    labels = app.state.served.predictor.label_names
    with torch_threads(1):
        offline = load_variant(app.state.served.choice.folder).predict_proba([prepared, raw], config.model.max_length, config.runtime.batch_size)
    served = [answer.json()["predictions"][0]["probabilities"][name] for name in labels]
    np.testing.assert_allclose(served, offline[0], atol=1e-6)  # the prepared text's probabilities, not the raw one's
    assert not np.allclose(offline[0], offline[1], atol=1e-6), "the test text must read differently raw and prepared"

def test_full_queue_answers_503_with_retry_after(make_app):
    app = make_app(max_batch_size=1, max_wait_ms=0, queue_size=1)
    slowed(app, 0.5)
    answers = asyncio.run(post_all(app, "/v1/predict", [{"texts": ["好"]}] * 5))
    statuses = sorted(answer.status_code for answer in answers)
    # one request is being served and one waits in the queue of 1: both get 200 when the batcher took the first before the
    # second arrived; on a loaded machine it may not have, and the second is refused too. Either is a bounded queue working.
    assert statuses.count(200) >= 1 and 503 in statuses and set(statuses) <= {200, 503}, statuses
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "the server is busy" in refused.json()["detail"]
    with _client(app) as client:
        assert samples(client.get("/metrics").text)[("bigmodel_request_errors_total", (("route", "/v1/predict"), ("status", "503")))] >= 1

def test_request_past_its_deadline_gets_504(make_app):
    app = make_app(request_timeout=0.2)
    slowed(app, 1.0)
    with _client(app) as client: answer = client.post("/v1/predict", json={"texts": ["好"]})
    assert answer.status_code == 504 and answer.json() == {"detail": "no answer within 0.2 s (--request-timeout): the model is busy; retry later"}

def test_v1_routes_refuse_bad_requests(make_app):
    app = make_app(api_key=KEY, max_texts=4, max_chars=50)
    with _client(app) as client:
        for method, path in (("POST", "/v1/predict"), ("POST", "/v1/explain"), ("GET", "/v1/model"), ("GET", "/v1/monitor")):
            answer = client.request(method, path, json={"texts": ["好"]})
            assert answer.status_code == 401 and "X-API-Key" in answer.json()["detail"], (path, answer.text)
        for probe in ("/healthz", "/readyz", "/metrics"): assert client.get(probe).status_code == 200
        keyed = {"X-API-Key": KEY}
        for path in ("/v1/predict", "/v1/explain"):
            too_large = client.post(path, content=b"x" * 100_000, headers={**keyed, "content-type": "application/json"})
            assert too_large.status_code == 413 and "at most" in too_large.json()["detail"]
            for body, message in (({"texts": ["好", 3]}, "texts[1] must be a string"), ({"text": "好"}, "texts is missing"),
                                  ({"texts": ["长" * 51]}, "texts[0] has 51 characters; at most 50")):
                answer = client.post(path, json=body, headers=keyed)
                assert answer.status_code == 422 and message in answer.json()["detail"], (path, answer.text)
        assert client.post("/v1/explain", json={"texts": ["好"] * 5}, headers=keyed).json()["detail"].startswith("texts has 5 items; at most 4")
        assert client.post("/v1/predict", json={"texts": ["好"] * 5}, headers=keyed).status_code == 422
        assert client.post("/v1/predict", json={"texts": ["好"]}, headers=keyed).status_code == 200
    assert KEY not in Path(app.state.request_log.path).read_text()

def test_explain_model_card_monitor_metrics_and_openapi(make_app, tiny_run):
    from bigmodel_nb.serve import EXPLAIN_MAX_EVALS
    app, texts = make_app(cors_origins=["https://example.org"]), texts_of(tiny_run)
    labels = app.state.served.predictor.label_names
    with _client(app) as client:
        started = time.perf_counter()
        explained = client.post("/v1/explain", json={"texts": texts[:2]})
        assert explained.status_code == 200 and time.perf_counter() - started < 60
        items = explained.json()["explanations"]
        assert len(items) == 2 and all(0 < item["evals"] <= EXPLAIN_MAX_EVALS for item in items)
        for item in items:
            assert set(item["values"]) == set(labels) and all(len(values) == len(item["tokens"]) for values in item["values"].values())
        card = client.get("/v1/model").json()
        metrics = json.loads((tiny_run/"metrics.json").read_text())
        assert card["labels"] == labels and card["variant"] == app.state.served.choice.name
        assert card["data"]["fingerprint"] == metrics["data"]["fingerprint"] and card["metrics"]["test_accuracy"] == metrics["test"]["accuracy"]
        assert card["licence"] and card["artifacts"]["verified_against_record"]
        for _ in range(3): client.post("/v1/predict", json={"texts": texts[:20]})
        snapshot = client.get("/v1/monitor").json()
        assert snapshot["requests_seen"] == 3 and snapshot["texts_seen"] == 60 and "text_length" in snapshot["features"]
        exposition = client.get("/metrics").text
        for series in ("bigmodel_requests_total", "bigmodel_request_errors_total", "bigmodel_request_latency_seconds_bucket",
                       "bigmodel_batch_size_bucket", "bigmodel_batch_requests_bucket", "bigmodel_queue_depth", "bigmodel_model_load_seconds",
                       "process_cpu_seconds_total", "process_resident_memory_bytes", 'bigmodel_monitor_psi{feature="text_length"}',
                       'bigmodel_monitor_alert{feature="text_length"}'):
            assert series in exposition, series
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/v1/predict", "/v1/explain", "/v1/model", "/v1/monitor", "/healthz", "/readyz", "/metrics", "/predict"} <= set(paths)
        assert paths["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]["texts"]
        assert "Alias" in paths["/predict"]["post"]["description"] and "Alias" in paths["/info"]["get"]["description"]
        preflight = client.options("/v1/predict", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST",
                                                           "Access-Control-Request-Headers": "X-API-Key"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://example.org"
        assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": "https://elsewhere.example"}).headers
    records = [json.loads(line) for line in Path(app.state.request_log.path).read_text().splitlines()]
    predicted = [record for record in records if record["endpoint"] == "/v1/predict"]
    assert len(predicted) == 3 and all({"text_lengths", "unknown_rates", "predicted", "confidences"} <= set(r) for r in predicted)
    assert len(predicted[0]["confidences"]) == 20

def test_no_cors_headers_by_default(make_app):
    with _client(make_app()) as client:
        answer = client.get("/healthz", headers={"Origin": "https://example.org"})
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers

def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes()); data[len(data) // 2] ^= 0xFF; path.write_bytes(bytes(data))

def test_changed_missing_or_added_files_are_refused(tiny_run, tmp_path, capsys):
    from bigmodel_nb.core import UserError
    from bigmodel_nb.serve import create_app, verified_variant
    run = shutil.copytree(tiny_run, tmp_path/"run")
    flip_byte(run/"model"/"model.safetensors")
    result = subprocess.run([cli_path(), "serve", str(run), "--variant", "fp32", "--port", "0"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0 and "serving" not in result.stdout and "Traceback" not in result.stderr
    assert "checksum mismatch for" in result.stderr and "model/model.safetensors" in result.stderr, result.stderr
    variant = next(path for path in (run/"compressed").iterdir() if path.is_dir())  # the compress stage's variant: digests too
    tokenizer = (variant/"tokenizer.json").read_bytes()
    (variant/"tokenizer.json").unlink()
    with pytest.raises(UserError, match="tokenizer.json is missing"): verified_variant(run, variant.name)
    (variant/"tokenizer.json").write_bytes(tokenizer); (variant/"added_tokens.json").write_text("{}")
    with pytest.raises(UserError, match="added_tokens.json would be loaded but no digest of it was recorded"):
        verified_variant(run, variant.name)
    (variant/"added_tokens.json").unlink(); (variant/"manifest.json").unlink()  # a run made before digests: served, with a warning
    app = create_app(run, variant.name, log_path=tmp_path/"serve.jsonl")
    app.state.serving.close()
    assert "no digests are recorded" in capsys.readouterr().err

SLOW_SERVER = ("import sys, time, bigmodel_nb.serve as serve; run = serve.MicroBatcher._run; "
               "serve.MicroBatcher._run = lambda self, batch: (time.sleep(0.4), run(self, batch))[1]; "
               "from bigmodel_nb.cli import main; sys.exit(main(sys.argv[1:]))")

def start_server(run_dir: Path, tmp_path: Path, *options: str, slow: bool = False):
    "`bigmodel-nb serve` in its own process on a free port: (process, base URL, stdout lines, stderr path)."
    arguments = ["serve", str(run_dir), "--host", "127.0.0.1", "--port", "0", "--threads", "1", *options]
    command = [sys.executable, "-c", SLOW_SERVER, *arguments] if slow else [cli_path(), *arguments]
    stderr_path, lines = tmp_path/"server.stderr", queue.Queue()
    env = {key: value for key, value in os.environ.items() if key != "BIGMODEL_API_KEY"} | {"PYTHONUNBUFFERED": "1"}
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    try: match = wait_for_startup(process, lines, stderr_path)
    except BaseException: stop(process); raise
    return process, f"http://127.0.0.1:{match[3]}", lines, stderr_path

def test_sigterm_answers_every_request_in_flight(tiny_run, tmp_path):
    process, base, lines, stderr_path = start_server(tiny_run, tmp_path, "--max-batch-size", "1", "--max-wait-ms", "0", slow=True)
    try:
        def post(index):
            with httpx.Client(base_url=base, timeout=120) as client: return client.post("/v1/predict", json={"texts": [f"第{index}条"]})
        with ThreadPoolExecutor(6) as pool, httpx.Client(base_url=base, timeout=120) as prober:
            futures = [pool.submit(post, index) for index in range(6)]
            for _ in range(400):  # until all six are received: one model call running (0.4 s each), the rest queued
                values = samples(prober.get("/metrics").text)
                waiting, finished = values[("bigmodel_queue_depth", ())], values[("bigmodel_batch_requests_count", ())]
                if waiting > 0 and finished + waiting + 1 >= 6: break
                time.sleep(0.05)
            assert waiting > 0 and sum(future.done() for future in futures) < 6, (waiting, finished)
            os.kill(process.pid, signal.SIGTERM)
            answers = [future.result() for future in futures]
        assert [answer.status_code for answer in answers] == [200] * 6
        process.wait(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 0, stderr_path.read_text()[-3000:]
    assert "Traceback" not in stderr_path.read_text()

def test_workers_share_the_port_and_stop_on_sigterm(tiny_run, tmp_path):
    process, base, lines, stderr_path = start_server(tiny_run, tmp_path, "--workers", "2")
    try:
        with httpx.Client(base_url=base, timeout=180) as client:
            answer = client.post("/v1/predict", json={"texts": ["很好", "太差了"]})
            assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
            assert client.get("/readyz").json()["ready"] is True
    finally:
        stop(process)
    assert process.returncode == 0, stderr_path.read_text()[-3000:]
