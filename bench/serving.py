"""Serving benchmark: the same trained model served the naive way (a Flask app that tokenizes, runs and softmaxes one text
per request on flask's threaded development server) and by `bigmodel-nb serve`, each loaded by `bigmodel_nb.loadtest`
from this machine in one run, side by side; and the served sequences/s as a fraction of the same variant's offline
batch-32 throughput, measured in the same run over the same texts.

    .venv/bin/python bench/serving.py                                  # runs/default-20261204-165343, concurrency 16, 20 s each
    .venv/bin/python bench/serving.py --run RUN_DIR --concurrency 16 --duration 20 --json-out results.json
    .venv/bin/python bench/serving.py --serve-source /tmp/head       # the server of `git archive HEAD | tar -x -C /tmp/head`

Both servers serve the variant the compress stage selected (`bigmodel_nb.serve.choose_variant`) from a temporary copy of
the run (data/, model/, compressed/, tokenizer/, config.yaml, metrics.json): the server writes logs/serve.jsonl into the
folder it serves, and the finished run is left untouched. Both listen on 127.0.0.1 on a free port, run as subprocesses
one after the other (never together: they would share the CPU), and are stopped by PID. The offline figure is measured
first, in this process, with the server's intra-op thread count. Goals: ≥ 5× the naive requests/s with a lower p99, and
served sequences/s ≥ 70% of offline batch-32. The client runs on the same cores as the server it measures.
"""
import argparse, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
import numpy as np
import pandas as pd
import psutil
import torch

from bigmodel_nb.config import load_config
from bigmodel_nb.inference import load_variant
from bigmodel_nb.loadtest import loadtest
from bigmodel_nb.serve import DEFAULT_THREADS, choose_variant

DEFAULT_RUN = ROOT/"runs"/"default-20261204-165343"
RUN_PARTS = ("data", "model", "compressed", "tokenizer", "config.yaml", "metrics.json")  # what serving reads
GOAL_RATIO, GOAL_FRACTION = 5.0, 0.70


def copy_run(run_dir: Path, destination: Path) -> Path:
    "Copy the parts of `run_dir` a server reads into `destination`/run (never writing into the finished run)."
    target = destination/"run"
    target.mkdir(parents=True)
    for name in RUN_PARTS:
        source = run_dir/name
        if source.is_dir(): shutil.copytree(source, target/name)
        elif source.exists(): shutil.copy2(source, target/name)
    return target


def bench_texts(run_dir: Path, count: int) -> list[str]:
    "`count` texts of the run's test split (a fixed sample), the same for both servers and the offline figure."
    test = pd.read_parquet(run_dir/"data"/"test.parquet")
    return test["text"].sample(min(count, len(test)), random_state=0).tolist()


def naive_flask_app(run_dir: Path):
    "The blog-post server: Flask, the model loaded once, and per request one text tokenized, run and softmaxed."
    from flask import Flask, jsonify, request
    variant = load_variant(choose_variant(run_dir).folder)
    max_length, labels = load_config(run_dir/"config.yaml").model.max_length, variant.label_names
    app = Flask("naive")

    @app.post("/predict")
    def predict():
        answers = []
        for text in request.get_json()["texts"]:
            inputs = variant.tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
            probabilities = torch.softmax(torch.from_numpy(variant.runner(dict(inputs))), dim=-1)[0].tolist()
            answers.append({"label": labels[int(np.argmax(probabilities))], "probabilities": dict(zip(labels, probabilities))})
        return jsonify({"predictions": answers})

    @app.get("/healthz")
    def healthz(): return {"status": "ok"}
    return app


def free_port() -> int:
    "A TCP port free on 127.0.0.1 now."
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command: list[str], ready_url: str, log_path: Path, timeout: float = 180.0) -> subprocess.Popen:
    "Start `command` (output to `log_path`) and wait until `ready_url` answers 200; stopped by PID if it never does."
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None: break
        try:
            if httpx.get(ready_url, timeout=2, trust_env=False).status_code == 200: return process
        except httpx.TransportError: pass
        time.sleep(0.2)
    stop_server(process)
    raise RuntimeError(f"{' '.join(command)} did not become ready at {ready_url}; its output:\n{log_path.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen) -> None:
    "SIGTERM the server by its PID, SIGKILL it after 30 s."
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try: process.wait(30)
        except subprocess.TimeoutExpired: process.kill(); process.wait()


def memory_mb(pid: int) -> dict:
    "Resident memory of process `pid` now and at its peak (VmHWM), in MB."
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(psutil.Process(pid).memory_info().rss / 2**20, 1),
            "peak_rss_mb": round(int(status["VmHWM"].split()[0]) / 1024, 1)}


def measure_server(command: list[str], port: int, ready_path: str, path: str, texts: list[str], args, log_path: Path) -> dict:
    "Start a server, load it for `args.duration` s at `args.concurrency`, and return the load test's result with its memory."
    base = f"http://127.0.0.1:{port}"
    process = start_server(command, base + ready_path, log_path)
    try:
        loadtest(base, concurrency=2, duration=2, texts=texts, path=path)  # warm-up: first calls, allocator, connections
        result = loadtest(base, concurrency=args.concurrency, duration=args.duration, texts=texts, path=path)
        return {**result, **memory_mb(process.pid), "pid": process.pid}
    finally: stop_server(process)


def offline_throughput(folder: Path, texts: list[str], max_length: int, threads: int, min_seconds: float = 5.0) -> dict:
    "Sequences/s of `load_variant(folder).predict_proba(texts, max_length, batch_size=32)` on `threads` threads, repeated ≥ `min_seconds`."
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        variant = load_variant(folder, threads)
        variant.predict_proba(texts, max_length, batch_size=32)  # warm-up
        passes, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < min_seconds or passes < 3:
            variant.predict_proba(texts, max_length, batch_size=32); passes += 1
    finally: torch.set_num_threads(previous)
    return {"sequences_per_s": round(passes * len(texts) / elapsed, 2), "passes": passes, "threads": threads, "batch_size": 32}


def cli_path() -> str:
    "The venv's `bigmodel-nb` console script (next to this Python), else the one on PATH."
    candidate = Path(sys.executable).parent/"bigmodel-nb"
    return str(candidate) if candidate.exists() else shutil.which("bigmodel-nb")


def serve_command(serve_args: list[str], source: Path|None) -> list[str]:
    "`bigmodel-nb SERVE_ARGS` (the console script), or the same CLI imported from `source` first when given."
    if source is None: return [cli_path(), *serve_args]
    code = (f"import sys; sys.path.insert(0, {str(source.resolve())!r}); sys.argv = ['bigmodel-nb', *sys.argv[1:]]; "
            "import bigmodel_nb.cli as cli; assert cli.__file__.startswith(sys.path[0]), cli.__file__; cli.console_script()")
    return [sys.executable, "-c", code, *serve_args]


def print_table(naive: dict, served: dict, offline: dict, summary: dict) -> None:
    "The side-by-side table and the goal lines."
    rows = [("requests/s", "requests_per_s"), ("texts/s", "texts_per_s"), ("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"),
            ("p99 ms", "p99_ms"), ("max ms", "max_ms"), ("failed", "failed"), ("peak RSS MB", "peak_rss_mb")]
    print(f"\n{'':<14}{'naive Flask':>14}{'bigmodel-nb serve':>20}{'ratio':>9}")
    for label, key in rows:
        ratio = served[key] / naive[key] if naive[key] else float("nan")
        print(f"{label:<14}{naive[key]:>14}{served[key]:>20}{ratio:>9.2f}")
    print(f"offline batch-32: {offline['sequences_per_s']} sequences/s ({offline['threads']} thread(s)); served at concurrency "
          f"{served['concurrency']}: {served['texts_per_s']} = {summary['served_fraction_of_offline']:.1%} (goal ≥ {GOAL_FRACTION:.0%})")
    print(f"load average (1 min) before and after: {summary.get('load_average_1m')}")
    print(f"requests/s ratio {summary['requests_ratio']:.2f}× (goal ≥ {GOAL_RATIO:g}×, met: {summary['ratio_goal_met']}); "
          f"p99 lower: {summary['p99_lower']}")


def summarize(naive: dict, served: dict, offline: dict) -> dict:
    "Ratios and whether each goal is met."
    ratio = served["requests_per_s"] / naive["requests_per_s"] if naive["requests_per_s"] else float("inf")
    fraction = served["texts_per_s"] / offline["sequences_per_s"]
    lower = served["p99_ms"] is not None and naive["p99_ms"] is not None and served["p99_ms"] < naive["p99_ms"]
    return {"requests_ratio": round(ratio, 2), "p99_lower": lower, "ratio_goal_met": ratio >= GOAL_RATIO and lower,
            "served_fraction_of_offline": round(fraction, 4), "fraction_goal_met": fraction >= GOAL_FRACTION}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN, help="a finished run folder (only read)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per server")
    parser.add_argument("--texts", type=int, default=64, help="texts of the run's test split to send in turn")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="the server's --threads, and the offline figure's")
    parser.add_argument("--json-out", type=Path, help="also write the result here")
    parser.add_argument("--serve-source", type=Path, help="serve with the bigmodel_nb package found in this folder (e.g. "
                        "`git archive HEAD | tar -x -C DIR`: the committed server) instead of the installed one")
    parser.add_argument("--flask-app", type=Path, help=argparse.SUPPRESS)  # internal: serve this run folder the naive way
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.flask_app:
        naive_flask_app(args.flask_app).run(host="127.0.0.1", port=args.port, threaded=True); return {}
    load_before = round(os.getloadavg()[0], 2)  # other work on these cores skews every figure: recorded before and after
    with tempfile.TemporaryDirectory(prefix="bigmodel-nb-bench-serving-") as tmp:
        run_dir, tmp = copy_run(args.run.resolve(), Path(tmp)), Path(tmp)
        texts, choice = bench_texts(run_dir, args.texts), choose_variant(run_dir)
        max_length = load_config(run_dir/"config.yaml").model.max_length
        print(f"run {args.run} → {run_dir}; variant {choice.name}; {len(texts)} texts; max_length {max_length}", flush=True)
        offline = offline_throughput(choice.folder, texts, max_length, args.threads)
        print(f"offline: {offline}", flush=True)
        port = free_port()
        naive = measure_server([sys.executable, __file__, "--flask-app", str(run_dir), "--port", str(port)], port, "/healthz",
                               "/predict", texts, args, tmp/"flask.log")
        print(f"naive Flask: {naive}", flush=True)
        port = free_port()
        serve_args = ["serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port), "--threads", str(args.threads)]
        served = measure_server(serve_command(serve_args, args.serve_source), port, "/readyz", "/v1/predict", texts, args, tmp/"serve.log")
        print(f"bigmodel-nb serve: {served}", flush=True)
    summary = {**summarize(naive, served, offline), "load_average_1m": [load_before, round(os.getloadavg()[0], 2)]}
    print_table(naive, served, offline, summary)
    result = {"run": str(args.run), "serve_source": str(args.serve_source or "installed"), "variant": choice.name, "concurrency": args.concurrency, "duration_s": args.duration,
              "texts": len(texts), "cpus": os.cpu_count(), "offline": offline, "naive": naive, "served": served, **summary}
    print("RESULT " + json.dumps(result, ensure_ascii=False))
    if args.json_out: args.json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
