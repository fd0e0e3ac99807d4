"""The data path on a large input: 100,000 synthetic reviews (bench/data_scale.py's generator) through the data and tokenizer
stages in a fresh process. Memory, unlike time, does not depend on the machine's load, so its bound is asserted: before the
rewrite this input needed 3.1 GB (about 26 KB a row); now about 0.5 GB."""
import hashlib, importlib.util, json, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = 100_000

def _bench():
    spec = importlib.util.spec_from_file_location("data_scale", ROOT/"bench"/"data_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

CHILD = """
import json, sys
from bigmodel_nb.config import load_config
from bigmodel_nb.stage import get_stage
config = load_config(None, [f'data.sources=[{{"path": "{sys.argv[1]}"}}]'])
result = get_stage(sys.argv[3]).run(config, sys.argv[2])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve, so a child of a big pytest process would report the parent's size
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print("RESULT " + json.dumps({"peak_mb": peak, "metrics": result.metrics}))
"""

def _stage(csv: Path, run: Path, stage: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(csv), str(run), stage], capture_output=True, text=True, cwd=ROOT,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory is read from /proc (Linux)")

@pytest.fixture(scope="module")
def large_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scale")
    csv = _bench().make_csv(folder/"reviews.csv", ROWS, seed=0)
    return csv, folder/"run", _stage(csv, folder/"run", "data")

def test_data_stage_accounts_for_every_row_in_bounded_memory(large_run):
    csv, run, result = large_run
    data = result["metrics"]["data"]
    assert data["rows_read"] == ROWS == data["rows_kept"] + data["rows_dropped"]
    assert data["rows_dropped"] == sum(data["dropped"].values()) == len(pd.read_parquet(run/"data"/"dropped.parquet"))
    assert data["dropped"].get("near_duplicate", 0) > 500  # texts sharing a long corpus line: real near duplicates
    splits = {name: pd.read_parquet(run/"data"/f"{name}.parquet") for name in ("train", "valid", "test")}
    assert sum(map(len, splits.values())) == data["rows_kept"]
    card = json.loads((run/"data"/"card.json").read_text(encoding="utf-8"))
    names = card["label_names"]
    lines = sorted(f"{names[label]}\t{text}" for frame in splits.values() for text, label in zip(frame["text"], frame["label"]))
    assert data["fingerprint"] == hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()  # the definition, in full
    assert all(len(frame) == frame["text"].nunique() for frame in splits.values())  # no exact copy left
    assert result["peak_mb"] < 1200, f"the data stage peaked at {result['peak_mb']:.0f} MB for {ROWS:,} rows"

def test_tokenizer_stage_in_bounded_memory(large_run):
    csv, run, _ = large_run
    result = _stage(csv, run, "tokenizer")
    assert result["metrics"]["tokenizer"]["vocab_size"] > 1000
    assert result["peak_mb"] < 1500, f"the tokenizer stage peaked at {result['peak_mb']:.0f} MB for {ROWS:,} rows"
