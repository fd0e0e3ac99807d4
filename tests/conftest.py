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
