"""A built wheel, installed into a fresh virtual environment, runs the quick profile from a folder that is not the repository:
the profiles, workflow notebooks and report templates ship inside the package.

The fresh environment gets the wheel alone (`--no-deps`); its dependencies are this environment's, reached through a `.pth`
line that adds only our site-packages folder (not the editable install's import hook, so `import bigmodel_nb` finds the wheel).
Resolving every dependency from the registry afresh is the README's pip path, measured by hand (bench/RESULTS.md, "pip")."""
import os, shutil, site, subprocess, sys, sysconfig, zipfile
from pathlib import Path

import pytest
from conftest import ROOT

def _tracked_tree(into: Path) -> Path:
    "A copy of the files git tracks (working-tree contents, links kept as links): the wheel must not depend on untracked files."
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT/name, into/name
        if not source.exists() and not source.is_symlink(): continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return into

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    tree = _tracked_tree(work/"tree")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work/"dist"), str(tree)],
                   check=True, capture_output=True, timeout=600)
    (built,) = (work/"dist").glob("bigmodel_nb-*.whl")
    return built

def test_the_wheel_ships_profiles_workflows_and_reports(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("bigmodel_nb/profiles/quick.yaml", "bigmodel_nb/profiles/default.yaml", "bigmodel_nb/profiles/full.yaml",
                   "bigmodel_nb/workflows/40_train.ipynb", "bigmodel_nb/reports/monitor.ipynb", "bigmodel_nb/cli.py"):
        assert needed in names, needed
    from bigmodel_nb.stage import REGISTRY, workflow_notebook
    for stage in REGISTRY: assert f"bigmodel_nb/workflows/{workflow_notebook(stage).name}" in names, stage  # every stage's
    assert not [name for name in names if name.startswith(("nbs/", "tests/", "bench/", "configs/"))]

def test_a_fresh_venv_with_the_wheel_runs_the_quick_profile(wheel, tmp_path):
    venv = tmp_path/"venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv/"bin"/"python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    (fresh_site/"_bigmodel_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    user = tmp_path/"elsewhere"
    user.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv/'bin'}:{env.get('PATH', '')}"
    where = subprocess.run([str(python), "-c", "import bigmodel_nb; print(bigmodel_nb.__file__)"], cwd=user, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(fresh_site)), f"imported {where}, not the wheel"
    version = subprocess.run([str(venv/"bin"/"bigmodel-nb"), "--version"], cwd=user, env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("bigmodel-nb "), version.stdout + version.stderr
    done = subprocess.run([str(venv/"bin"/"bigmodel-nb"), "run", "--profile", "quick", "--out", "runs/quick"], cwd=user, env=env,
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = user/"runs"/"quick"
    assert "the quick profile" in done.stderr and (run/"report.html").is_file()
    import json
    metrics = json.loads((run/"metrics.json").read_text())
    assert 0.5 < metrics["test"]["accuracy"] <= 1, metrics.get("test")
    assert "Failed to load" not in done.stderr, "import noise (torchao's optional kernels) reached the console"
    for notebook in (run/"notebooks").glob("*.ipynb"):  # nor the executed notebooks
        errors = [line for cell in json.loads(notebook.read_text())["cells"] for output in cell.get("outputs", [])
                  if output.get("name") == "stderr" for line in output.get("text", []) if "Failed to load" in line or "_pytree" in line]
        assert not errors, f"{notebook.name}: {errors[:2]}"
