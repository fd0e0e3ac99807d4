"The package is in step with the notebooks, and ships what papermill needs."
import filecmp, shutil, subprocess, sys
from pathlib import Path

from conftest import ROOT

def test_nbdev_export_changes_nothing(tmp_path):
    "Exporting the notebooks afresh gives exactly the committed modules."
    shutil.copytree(ROOT/"nbs", tmp_path/"nbs")
    shutil.copy(ROOT/"pyproject.toml", tmp_path/"pyproject.toml")
    (tmp_path/"bigmodel_nb").mkdir()
    shutil.copy(ROOT/"bigmodel_nb"/"__init__.py", tmp_path/"bigmodel_nb"/"__init__.py")
    exporter = Path(sys.executable).parent/"nbdev-export"
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True)
    generated = sorted(p.name for p in (tmp_path/"bigmodel_nb").glob("*.py"))
    committed = sorted(p.name for p in (ROOT/"bigmodel_nb").glob("*.py"))
    assert generated == committed
    _, mismatch, errors = filecmp.cmpfiles(tmp_path/"bigmodel_nb", ROOT/"bigmodel_nb", generated, shallow=False)
    assert not mismatch and not errors, f"out of step with the notebooks: {mismatch or errors}; run nbdev-export"

def test_workflow_notebooks_have_parameters_cells():
    "papermill needs the `parameters` tag (nbdev-clean must keep it) to inject the run's values."
    import nbformat
    from bigmodel_nb.stage import REGISTRY, workflow_notebook
    for stage in REGISTRY:
        notebook = nbformat.read(workflow_notebook(stage), as_version=4)
        tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, stage
        assert "config_path = None" in tagged[0].source and "run_dir = None" in tagged[0].source

def test_readme_is_generated_from_index(tmp_path):
    "README.md is nbs/index.ipynb as Markdown (`make readme`)."
    converter = Path(sys.executable).parent/"jupyter"
    subprocess.run([str(converter), "nbconvert", "--to", "markdown", str(ROOT/"nbs"/"index.ipynb"), "--output-dir", str(tmp_path),
                    "--output", "README"], check=True, capture_output=True)
    assert (tmp_path/"README.md").read_text() == (ROOT/"README.md").read_text(), "README.md is stale: run make readme"


def test_every_imported_library_is_declared():
    "Each third-party module the package imports comes from a distribution named in pyproject.toml's dependencies or extras."
    import ast, importlib.metadata, re, sys, tomllib
    project = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    declared = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in requirements}
    imported = set()
    for source in (ROOT/"bigmodel_nb").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import): imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module: imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"bigmodel_nb"}
    by_module = importlib.metadata.packages_distributions()
    missing = {module: by_module.get(module) for module in third_party
               if not {name.lower().replace("_", "-") for name in by_module.get(module, [module])} & declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
