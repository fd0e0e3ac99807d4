"""The server under generated and sustained load, as a deployment would see it: schemathesis cases from its own
/openapi.json (no 5xx), 30 s at concurrency 32 with zero failures, loadtest's loopback-only guard, and the deployment
files. The server is `bigmodel-nb serve` on a copy of `tiny_run`, its own process on 127.0.0.1, stopped by its PID.
Works with the unversioned routes (/predict) and, once the server has them, the /v1 routes too."""
import math, os, shutil, signal, socket, subprocess, time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import ROOT, cli_path
from bigmodel_nb.core import UserError
from bigmodel_nb.loadtest import loadtest

RUN_PARTS = ("data", "model", "compressed", "tokenizer", "config.yaml", "metrics.json")
SCHEMATHESIS_CASES = 300  # generated requests in total, at least


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    "SIGTERM by PID, SIGKILL after 30 s."
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try: process.wait(30)
        except subprocess.TimeoutExpired: process.kill(); process.wait()


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    "The base URL of `bigmodel-nb serve` on a copy of tiny_run (its request log must not land in the shared fixture)."
    run_dir = tmp_path_factory.mktemp("served")/"run"
    run_dir.mkdir()
    for name in RUN_PARTS:
        source = tiny_run/name
        if source.is_dir(): shutil.copytree(source, run_dir/name)
        elif source.exists(): shutil.copy2(source, run_dir/name)
    port, log_path = free_port(), run_dir.parent/"server.log"
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen([cli_path(), "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            try:
                if httpx.get(base + "/readyz", timeout=2, trust_env=False).status_code == 200: break
            except httpx.TransportError: time.sleep(0.2)
        else: pytest.fail(f"the server never became ready; its output:\n{log_path.read_text()[-3000:]}")
        yield base
    finally: stop(process)


def test_loadtest_refuses_other_machines():
    for url in ("http://10.1.2.3:8000", "http://example.com/", "https://192.0.2.7:443", "http://127.0.0.1.nip.io:8000"):
        with pytest.raises(UserError, match="this machine only"): loadtest(url, concurrency=1, duration=1)
    with pytest.raises(UserError, match="concurrency must be between 1 and 256"): loadtest("http://127.0.0.1:1", concurrency=10_000)
    with pytest.raises(UserError, match="duration must be between"): loadtest("http://127.0.0.1:1", duration=86_400)


def test_deployment_files_parse_and_name_the_probes():
    documents = [doc for doc in yaml.safe_load_all((ROOT/"deploy"/"kubernetes.yaml").read_text()) if doc]
    kinds = Counter(doc["kind"] for doc in documents)
    assert kinds["Deployment"] == 1 and kinds["Service"] == 1 and kinds["PersistentVolumeClaim"] == 1, kinds
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    key = next(env for env in container["env"] if env["name"] == "BIGMODEL_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]
    assert {"requests", "limits"} <= set(container["resources"]) and "memory" in container["resources"]["limits"]
    dockerfile = (ROOT/"Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile and "torch==2.13.0" in dockerfile and "/healthz" in dockerfile
    assert "USER 10001" in dockerfile and '"--host", "0.0.0.0"' in dockerfile


def operation_test(operation, mode, cases: int, calls: Counter, server_errors: list, base: str):
    "A Hypothesis test sending `cases` requests generated for `operation` in `mode`, counting them by status and keeping 5xx."
    from hypothesis import HealthCheck, Phase, given, settings
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run_case(case):
        response = case.call(base_url=base, timeout=60)
        calls[f"{operation.method.upper()} {operation.path} {mode.value} → {response.status_code}"] += 1
        if response.status_code >= 500: server_errors.append((case.as_curl_command(), response.status_code, response.text[:300]))
    return run_case


def test_schemathesis_finds_no_server_errors(server):
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import GenerationMode
    schema = schemathesis.openapi.from_url(server + "/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {operation.path for operation in operations}
    assert "/predict" in paths or "/v1/predict" in paths, paths
    with_body = [op for op in operations if op.method.upper() in ("POST", "PUT", "PATCH")]
    calls, server_errors = Counter(), []
    for operation in operations:  # operations with a body carry the volume: a GET without parameters has one distinct case
        takes_body = operation in with_body
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if takes_body else [GenerationMode.POSITIVE]
        cases = math.ceil(SCHEMATHESIS_CASES / (2 * len(with_body))) if takes_body else 5
        for mode in modes: operation_test(operation, mode, cases, calls, server_errors, server)()
    assert not server_errors, f"{len(server_errors)} server errors, first: {server_errors[:3]}"
    assert sum(calls.values()) >= SCHEMATHESIS_CASES, calls
    print(f"schemathesis: {sum(calls.values())} cases: {dict(sorted(calls.items()))}")
    assert httpx.get(server + "/readyz", trust_env=False).status_code == 200  # still serving


def test_thirty_seconds_at_concurrency_32_without_failures(server):
    schema_paths = httpx.get(server + "/openapi.json", trust_env=False).json()["paths"]
    result = loadtest(server, concurrency=32, duration=30)
    assert result["path"] == ("/v1/predict" if "/v1/predict" in schema_paths else "/predict")
    assert result["failed"] == 0 and result["errors"] == {}, result
    assert set(result["statuses"]) == {"200"} and result["requests"] >= 32, result
    print(f"loadtest at concurrency 32 for 30 s: {result}")
