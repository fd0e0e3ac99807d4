"The pip extras: each names the libraries its job needs, and a missing one fails early with the `pip install` line to type."
import re, subprocess, sys, tomllib

from conftest import ROOT

def _extras_in_pyproject() -> dict[str, set[str]]:
    "{extra: distribution names it lists} from pyproject.toml, self-references (bigmodel-nb[...]) left out."
    extras = tomllib.loads((ROOT/"pyproject.toml").read_text())["project"]["optional-dependencies"]
    name = lambda requirement: re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    return {extra: {name(r) for r in requirements if name(r) != "bigmodel-nb"} for extra, requirements in extras.items()}

def test_each_extra_brings_the_modules_it_promises():
    "core.EXTRAS (what the error messages name) and pyproject's extras (what pip installs) agree, module by module."
    import importlib.metadata
    from bigmodel_nb.core import EXTRAS
    declared, by_module = _extras_in_pyproject(), importlib.metadata.packages_distributions()
    for extra, (modules, _) in EXTRAS.items():
        assert extra in declared, f"core.EXTRAS names [{extra}], which pyproject.toml does not define"
        for module in modules:
            distributions = {d.lower().replace("_", "-") for d in by_module.get(module, [])}
            assert distributions & declared[extra], f"[{extra}] does not bring the module {module} (from {distributions or 'nothing installed'})"
    assert {"compress", "serve", "sources", "english", "demo", "dev"} <= set(declared)

def _core_distributions() -> set[str]:
    "The distributions a core install (no extras) brings: bigmodel-nb's dependencies and theirs, as installed here."
    import importlib.metadata
    from packaging.requirements import Requirement
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
    seen, todo = set(), ["bigmodel-nb"]
    while todo:
        name = todo.pop()
        if norm(name) in seen: continue
        seen.add(norm(name))
        try: requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError: continue
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}): todo.append(requirement.name)
    return seen

def _blocked_modules(extras) -> list[str]:
    "The modules of `extras` that a core install would not have (huggingface_hub brings httpx and h11 anyway, for example)."
    import importlib.metadata
    from bigmodel_nb.core import EXTRAS
    core, by_module = _core_distributions(), importlib.metadata.packages_distributions()
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
    return [module for extra in extras for module in EXTRAS[extra][0]
            if not {norm(d) for d in by_module.get(module, [])} & core]

def _without(extras, code):
    "Run `code` in a fresh interpreter where the modules only `extras` bring cannot be imported; (exit status, output)."
    block = f"import sys\nfor module in {_blocked_modules(extras)!r}: sys.modules[module] = None  # as if not installed\n"
    done = subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    return done.returncode, done.stdout + done.stderr

def test_blocking_leaves_what_the_core_brings():
    "The core install has torch, transformers and (through huggingface_hub) h11; the serve extra adds fastapi and uvicorn."
    core = _core_distributions()
    assert {"torch", "transformers", "optuna", "h11"} <= core and not {"fastapi", "uvicorn", "onnx", "snownlp"} & core
    assert {"fastapi", "uvicorn"} <= set(_blocked_modules(["serve"])) and "h11" not in _blocked_modules(["serve"])

def test_the_core_install_imports_without_any_extra():
    "Every module but the server and the load test imports with no extra installed; those two name the extra."
    code = """
import importlib, pkgutil, bigmodel_nb
from bigmodel_nb.core import UserError
for info in pkgutil.iter_modules(bigmodel_nb.__path__):
    try: importlib.import_module("bigmodel_nb." + info.name)
    except UserError as error: print(info.name, "->", error)
"""
    status, output = _without(["compress", "serve", "sources", "english", "demo", "tracking"], code)
    assert status == 0, output
    refused = dict(line.split(" -> ", 1) for line in output.splitlines() if " -> " in line)
    assert set(refused) == {"serve", "loadtest"}, output
    assert "pip install 'bigmodel-nb[serve]'" in refused["serve"] and "pip install 'bigmodel-nb[serve]'" in refused["loadtest"]

def test_a_run_that_needs_a_missing_extra_fails_before_any_work(tmp_path):
    "The quick profile runs the compress stage: without [compress] the run stops at once with the line to type, writing nothing."
    out = tmp_path/"run"
    code = f"""
from bigmodel_nb.cli import main
sys.exit(main(["run", "--profile", "quick", "--out", {str(out)!r}]))
"""
    status, output = _without(["compress"], code)
    assert status == 1, output
    assert "this run needs onnx, onnxruntime, onnxscript, torchao, which is not installed: pip install 'bigmodel-nb[compress]'" in output
    assert "Traceback" not in output and not out.exists()
    status, output = _without(["serve"], f"""
from bigmodel_nb.cli import main
sys.exit(main(["serve", {str(out)!r}]))
""")
    assert status == 1 and "pip install 'bigmodel-nb[serve]'" in output and "Traceback" not in output, output
