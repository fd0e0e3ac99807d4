"`make lab` opens JupyterLab on nbs/: started here on loopback with a token, its file tree lists the notebooks."
import json, os, signal, socket, subprocess, time, urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer: return answer.status, answer.read()

def test_make_lab_serves_the_notebooks(tmp_path):
    port, token = _free_port(), "lab-test-token"
    options = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path/"runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path/"config")}
    # -o: the venv is set up already (the test runs in it); make would otherwise reinstall when pyproject.toml is newer
    lab = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "lab", f"LAB_ARGS={options}"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, listing = time.monotonic() + 120, None
        while time.monotonic() < deadline and lab.poll() is None:
            try: status, body = _get(f"http://127.0.0.1:{port}/api/contents?token={token}")
            except OSError: time.sleep(1); continue
            listing = json.loads(body); break
        assert listing is not None, f"JupyterLab did not answer on 127.0.0.1:{port} (exit status {lab.poll()})"
        names = {item["name"] for item in listing["content"]}
        assert {"index.ipynb", "10_data.ipynb", "40_train.ipynb"} <= names, names  # the tree is nbs/
        status, page = _get(f"http://127.0.0.1:{port}/lab/tree/index.ipynb?token={token}")
        assert status == 200 and b"JupyterLab" in page
    finally:
        os.killpg(lab.pid, signal.SIGTERM)  # make and the server it started: the process group led by the PID we started
        try: lab.wait(timeout=30)
        except subprocess.TimeoutExpired: os.killpg(lab.pid, signal.SIGKILL); lab.wait()
