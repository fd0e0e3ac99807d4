"The server as a user runs it: its own process on a free port, real HTTP, good and bad requests, stopped by its PID."
import json, os, queue, re, subprocess, sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, cli_path

STARTUP_LINE = re.compile(r"^serving (\S+) from (.+) on http://127\.0\.0\.1:(\d+) \((.+)\)$")
STARTUP_WAIT_S = 300  # a bound, so a broken server fails the test instead of hanging it; not a timing assertion
REQUEST_TIMEOUT_S = 120

def cli_has_serve() -> bool:
    cli = cli_path()
    return bool(cli) and subprocess.run([cli, "serve", "--help"], capture_output=True, timeout=120).returncode == 0

def server_command(run_dir: Path) -> list[str]:
    "`bigmodel-nb serve` on port 0 when the CLI has the verb, else `run_server` through python -c."
    if cli_has_serve(): return [cli_path(), "serve", str(run_dir), "--host", "127.0.0.1", "--port", "0", "--threads", "1"]
    code = f"from bigmodel_nb.serve import run_server; run_server({str(run_dir)!r}, host='127.0.0.1', port=0, threads=1)"
    return [sys.executable, "-c", code]

def read_lines(stream, lines: queue.Queue) -> None:
    for line in stream: lines.put(line.rstrip("\n"))
    lines.put(None)

def wait_for_startup(process: subprocess.Popen, lines: queue.Queue, stderr_path: Path) -> re.Match:
    "The startup line's match, or a failure that shows what the server printed."
    seen = []
    while True:
        try: line = lines.get(timeout=STARTUP_WAIT_S)
        except queue.Empty: line = None
        if line is None:
            pytest.fail(f"no startup line (exit status {process.poll()}); stdout: {seen}; stderr: {stderr_path.read_text()[-3000:]}")
        seen.append(line)
        if match := STARTUP_LINE.match(line): return match

def stop(process: subprocess.Popen) -> None:
    "SIGTERM, wait, and SIGKILL only if it does not end."
    if process.poll() is None: process.terminate()
    try: process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill(); process.wait(timeout=60)

def probabilities_of(answer: dict, label_names: list[str]) -> np.ndarray:
    return np.array([[prediction["probabilities"][name] for name in label_names] for prediction in answer["predictions"]])

def test_server_answers_rejects_and_stops_cleanly(tiny_run, tmp_path):
    from bigmodel_nb.compress import torch_threads
    from bigmodel_nb.inference import load_variant
    from bigmodel_nb.config import load_config
    selected = json.loads((tiny_run/"compressed"/"selected.json").read_text())
    config, card = load_config(tiny_run/"config.yaml"), json.loads((tiny_run/"data"/"card.json").read_text())
    label_names, texts = card["label_names"], pd.read_parquet(tiny_run/"data"/"test.parquet")["text"].tolist()
    variant = load_variant(tiny_run/selected["path"])
    def reference(batch):
        with torch_threads(1): return variant.predict_proba(batch, config.model.max_length, config.runtime.batch_size)
    log_path = tiny_run/"logs"/"serve.jsonl"
    lines_before = len(log_path.read_text().splitlines()) if log_path.exists() else 0

    stderr_path, lines = tmp_path/"server.stderr", queue.Queue()
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(server_command(tiny_run), cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    posted = 0
    try:
        match = wait_for_startup(process, lines, stderr_path)
        assert match[1] == selected["name"] and Path(match[2]) == tiny_run.resolve()
        base = f"http://127.0.0.1:{match[3]}"
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
            assert client.get("/health").json() == {"status": "ok"}
            assert client.get("/ready").json() == {"ready": True, "variant": selected["name"]}
            info = client.get("/info").json()
            assert info["variant"] == selected["name"] and info["labels"] == label_names
            assert info["max_length"] == config.model.max_length and info["threads"]["torch_intra_op"] == 1
            assert info["reason"].startswith("selected by the compress stage")

            # the whole test split in one request: the compress stage's own probabilities for this variant
            answer = client.post("/predict", json={"texts": texts}); posted += 1
            assert answer.status_code == 200 and answer.json()["variant"] == selected["name"]
            expected = reference(texts)
            np.testing.assert_allclose(probabilities_of(answer.json(), label_names), expected, atol=1e-6)
            assert [p["label"] for p in answer.json()["predictions"]] == [label_names[i] for i in expected.argmax(1)]

            # 50 more: 30 one after another, 20 from 4 threads at once, 1 to 5 texts each
            batches = [texts[i % len(texts):i % len(texts) + 1 + i % 5] for i in range(50)]
            def post(batch):
                with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as own: return own.post("/predict", json={"texts": batch})
            answers = [client.post("/predict", json={"texts": batch}) for batch in batches[:30]]
            with ThreadPoolExecutor(4) as pool: answers += list(pool.map(post, batches[30:]))
            posted += len(batches)
            # requests that arrive together are run as one batch (micro-batching): exact for fp32; a dynamic-int8 variant
            # quantizes activations with one scale per batch, so its probabilities move slightly with the company they keep
            together = 1e-6 if selected["name"] == "fp32" else 2e-2
            for index, (batch, answer) in enumerate(zip(batches, answers)):
                assert answer.status_code == 200, answer.text
                np.testing.assert_allclose(probabilities_of(answer.json(), label_names), reference(batch),
                                           atol=1e-6 if index < 30 else together)

            bad = {"empty list": ({"texts": []}, 422, "texts is empty"),
                   "too many texts": ({"texts": ["好"] * 129}, 422, "texts has 129 items; at most 128"),
                   "too long a text": ({"texts": ["好", "长" * 5001]}, 422, "texts[1] has 5001 characters; at most 5000"),
                   "empty text": ({"texts": ["好", ""]}, 422, "texts[1] is empty"),
                   "not a string": ({"texts": ["好", 3]}, 422, "texts[1] must be a string"),
                   "wrong field": ({"text": "好"}, 422, "texts is missing")}
            for case, (body, status, message) in bad.items():
                answer = client.post("/predict", json=body); posted += 1
                assert answer.status_code == status and message in answer.json()["detail"], (case, answer.text)
            answer = client.post("/predict", content=b'{"texts": [', headers={"content-type": "application/json"}); posted += 1
            assert answer.status_code == 422 and "not valid JSON" in answer.json()["detail"]
            answer = client.post("/predict", content=b"x" * 20_000_000, headers={"content-type": "application/json"}); posted += 1
            assert answer.status_code == 413 and "at most" in answer.json()["detail"]
            assert client.get("/predict").status_code == 405
            assert client.post("/predict", json={"texts": ["还在"]}).status_code == 200; posted += 1  # bad input did no harm
    finally:
        stop(process)
    assert process.returncode == 0, stderr_path.read_text()[-3000:]  # SIGTERM ends it gracefully
    rest = []
    while (line := lines.get(timeout=10)) is not None: rest.append(line)
    assert any(line.startswith(f"stopped serving {selected['name']}") for line in rest), rest
    assert "Traceback" not in stderr_path.read_text()

    records = [json.loads(line) for line in log_path.read_text().splitlines()[lines_before:]]
    assert len(records) == posted
    answered = [record for record in records if record["status"] == 200]
    assert len(answered) == 52 and answered[0]["n_texts"] == len(texts)
    assert answered[0]["text_lengths"] == [len(text) for text in texts] and sum(answered[0]["labels"].values()) == len(texts)
    assert sorted({record["status"] for record in records}) == [200, 413, 422]
    assert all(record["variant"] == selected["name"] for record in records)

def test_unknown_variant_fails_before_listening(cli, tiny_run):
    if not cli_has_serve(): pytest.skip("the CLI has no serve verb yet")
    result = cli("serve", str(tiny_run), "--port", "0", "--variant", "onnx_int9", timeout=300)
    assert result.returncode != 0 and "serving" not in result.stdout
    assert "variant 'onnx_int9' is not in" in result.stderr and "it holds: fp32, pytorch_int8" in result.stderr
    assert "Traceback" not in result.stderr
