"""Runs are reproducible: the quick config run twice on this machine gives the same metrics.json (timings and dates
aside), byte-identical splits and tokenizer files, and the same model weights."""
import hashlib, json, re
from pathlib import Path

from conftest import run_cli

# what a run measures of the machine rather than of the model; the compress stage is off: which variant it serves
# depends on measured latencies, which no seed fixes (README, "Reproducible runs")
TIMING = re.compile(r"seconds|per_second|runtime|time|date|latency|speedup|gflops|resumed")
SETTINGS = ["compress.enabled=false", "runtime.threads=1", "evaluate.bootstrap_samples=200"]


def without_timings(node):
    if isinstance(node, dict): return {key: without_timings(value) for key, value in node.items() if not TIMING.search(key)}
    if isinstance(node, list): return [without_timings(value) for value in node]
    return node


def digests(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_quick_config_twice_gives_the_same_run(tmp_path):
    runs = []
    for name in ("first", "second"):
        out = tmp_path/name
        result = run_cli("run", "configs/quick.yaml", "--out", str(out), *[part for setting in SETTINGS for part in ("--set", setting)])
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(out)
    first, second = (json.loads((run/"metrics.json").read_text()) for run in runs)
    assert without_timings(first) == without_timings(second)
    assert first["test"]["accuracy"] > 0.5
    for folder in ("data", "tokenizer"):
        assert digests(runs[0]/folder) == digests(runs[1]/folder), folder
    weights = [hashlib.sha256((run/"model"/"model.safetensors").read_bytes()).hexdigest() for run in runs]
    assert weights[0] == weights[1]
