"""Build the docs site where Quarto is missing: nbdev processes every notebook in nbs/ with the processors `nbdev-docs`
uses (a `show_doc` cell after each exported symbol, run to render its signature, docments and docstring; export and
hidden cells dropped), then mkdocs-material with mkdocs-jupyter renders the processed copies into a static site that
reads offline.

    python docs/build.py [--execute] [--site-dir _docs] [--work-dir _proc_mkdocs] [--workers 2] [--strict] [--only GLOB]

nbs/ is never written to. Without --execute a page shows the outputs saved in its notebook (the notebooks here are kept
without outputs) plus the `show_doc` output; with it every cell runs as under `nbdev-test` (cells flagged with
`tst_flags` skipped), so pages show tables, figures and printed results. A cell that fails is listed and left blank.
`make docs` runs nbdev's own `nbdev-docs` instead where `quarto` is installed.
"""
import argparse, ast, os, re, shutil, subprocess, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from nbdev.config import get_config, nbpath2html
from nbdev.process import NBProcessor
from nbdev import processors as nbdev_processors
from nbdev.processors import exec_show_docs, _do_eval, _show_docs  # nbdev's own rule for the cells `show_doc` needs
from nbdev.test import _skip_cell                        # the cells nbdev-test leaves out

ROOT = Path(__file__).resolve().parent.parent
DOCS = Path(__file__).resolve().parent
SECTIONS = {range(0, 10): "Foundations", range(10, 80): "Lifecycle stages", range(80, 100): "Report, pipeline and serving"}
_re_showdoc = re.compile(r"^show_doc", re.MULTILINE)  # how nbdev's clean_show_doc spots a show_doc cell


class exec_doc_cells(exec_show_docs):
    """nbdev's `exec_show_docs`, narrowed to what `show_doc` needs: exported cells and cells made only of imports and
    `show_doc` calls. nbdev also runs cells that mix imports with other code (here: tests and examples that need cells it
    does not run); those are left to --execute. A cell that fails is recorded and left without output."""
    def begin(self):
        super().begin()
        self.nb.failures_ = []

    def wanted(self, cell) -> bool:
        if not (self.nb.has_docs_ and _do_eval(cell)): return False
        if cell.directives_.keys() & {"export", "exports", "exporti", "exec_doc"}: return True
        return all(isinstance(tree, (ast.Import, ast.ImportFrom)) or _show_docs([tree]) for tree in cell.parsed_())

    def __call__(self, cell):
        if not hasattr(self, "k") or not self.wanted(cell): return
        self.k.cell(cell, timeout=get_config().get("cell_timeout") or None)  # nbdev-test's limit (600 s by default)
        if self.k.exc is not None:
            first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
            self.nb.failures_.append(f"cell {cell.idx_} `{first_line[:70]}`: {type(self.k.exc).__name__}: {self.k.exc}")
            cell.outputs = []


class exec_all_cells(exec_doc_cells):
    "Every code cell that nbdev-test would run (cells flagged with the `tst_flags` skipped), so that pages show outputs."
    def begin(self):
        super().begin()
        self.skipped = _skip_cell(self.nb, str(get_config().get("tst_flags", "")).split())

    def wanted(self, cell) -> bool: return not self.skipped(cell)


def _procs(execute: bool) -> list:
    "nbdev's `FilterDefaults.base_procs` less the Quarto-only ones (front matter, show_doc directives, code folds, doc links)."
    p = nbdev_processors
    return [p.populate_language, p.add_show_docs, p.strip_ansi, p.hide_line, p.filter_stream_, p.rm_header_dash,
            exec_all_cells if execute else exec_doc_cells, p.rm_export, p.ai_magics, p.clean_magics, p.hide_,
            p.mv_exports, p.strip_hidden_metadata]


def _finish_for_mkdocs(nb):
    """Drop nbdev's cell marker and execnb's timings, hide `show_doc` inputs (their rendered output is the doc), and drop
    the widget state: live widgets need a kernel, or a widget manager from a CDN plus RequireJS (which mkdocs-material
    pages leave out), so on these offline pages a widget shows its text form instead."""
    for cell in nb.cells:
        cell.pop("has_sd", None)  # nbdev's marker on the cells it added: not a notebook field, nbconvert rejects it
        cell.get("metadata", {}).pop("execution", None)  # execnb's timings: a float where nbformat wants strings
        if cell.cell_type == "code" and _re_showdoc.search(cell.source or ""):
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), "remove_input"]
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    nb.metadata.pop("widgets", None)


def process_notebook(source: str, dest: str, execute: bool) -> list[str]:
    "Process the notebook `source` into `dest` for the docs; return what failed to run in it."
    import warnings
    from fastcore.nbio import write_nb
    # nbdev warns of every cell that mixes imports with other code (see its FAQ); without --execute such cells do not run
    warnings.filterwarnings("ignore", message="Found cells containing imports and other code")
    os.environ["IN_TEST"] = "1"
    os.chdir(Path(source).parent)  # cells find files relative to their notebook, as under nbdev-test
    processor = NBProcessor(source, procs=_procs(execute), rm_directives=True)
    processor.process()
    _finish_for_mkdocs(processor.nb)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    write_nb(processor.nb, dest)
    return [f"{Path(source).name} {failure}" for failure in getattr(processor.nb, "failures_", [])]


def notebooks(nbs_path: Path, only: str = "*.ipynb") -> list[Path]:
    "The notebooks under `nbs_path` whose name matches `only`, less hidden and `_` folders (checkpoints, nbdev's `_proc`)."
    return sorted(p for p in nbs_path.rglob("*.ipynb") if p.match(only)
                  and not any(part.startswith((".", "_")) for part in p.relative_to(nbs_path).parts))


def page_path(notebook: Path, nbs_path: Path) -> Path:
    "Where the notebook's page source goes, named as nbdev names its pages (`10_data.ipynb` -> `data`)."
    return nbpath2html(notebook.relative_to(nbs_path)).with_suffix(".ipynb")


def section_of(notebook: Path, nbs_path: Path) -> str:
    "The nav section of a notebook: its folder, or the lifecycle range of its number."
    relative = notebook.relative_to(nbs_path)
    if len(relative.parts) > 1: return relative.parts[0].replace("_", " ").capitalize()
    number = re.match(r"\d+", relative.name)
    if number: return next((title for numbers, title in SECTIONS.items() if int(number.group()) in numbers), "More")
    return "More"


def title_of(notebook: Path) -> str:
    "The notebook's `# heading` (nbdev's title), else its page name."
    import json
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "markdown": continue
        heading = re.search(r"^#\s+(.+)$", "".join(cell["source"]), re.MULTILINE)
        if heading: return heading.group(1).strip()
    return nbpath2html(notebook).stem


def nav_for(found: list[Path], nbs_path: Path) -> list:
    "Home first, then one section per group of notebooks, in their order, each page titled by its notebook's heading."
    nav, sections = [], {}
    for notebook in found:
        page = page_path(notebook, nbs_path).as_posix()
        if page == "index.ipynb": nav.insert(0, {"Home": page})
        else: sections.setdefault(section_of(notebook, nbs_path), []).append({title_of(notebook): page})
    return nav + [{title: pages} for title, pages in sections.items()]


def write_mkdocs_config(work_dir: Path, nav: list) -> Path:
    "A config in `work_dir` that inherits docs/mkdocs.yml and adds the generated pages and nav."
    import yaml
    config = work_dir/"mkdocs.yml"
    config.write_text(yaml.safe_dump({"INHERIT": str(DOCS/"mkdocs.yml"), "docs_dir": "pages", "nav": nav},
                                     sort_keys=False, allow_unicode=True))
    return config


def _size_mb(folder: Path) -> float: return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def build(site_dir: Path, work_dir: Path, workers: int = 2, execute: bool = False, strict: bool = False,
          only: str = "*.ipynb") -> list[str]:
    "Process nbs/ into `work_dir` and render the site into `site_dir`; return the cells that failed to run."
    nbs_path = get_config(ROOT).nbs_path
    found = notebooks(nbs_path, only)
    if not found: raise SystemExit(f"no notebook in {nbs_path} matches {only!r}")
    pages = work_dir/"pages"
    shutil.rmtree(pages, ignore_errors=True)
    pages.mkdir(parents=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn")) as pool:
        jobs = [pool.submit(process_notebook, str(nb), str(pages/page_path(nb, nbs_path)), execute) for nb in found]
        failures = [failure for job in jobs for failure in job.result()]
    print(f"nbdev processed {len(found)} notebooks in {time.perf_counter() - started:.0f} s"
          f"{' (every cell run)' if execute else ' (exported, import and show_doc cells run)'}")
    for failure in failures: print(f"  could not run for the docs: {failure}")
    if failures and strict: raise SystemExit(f"{len(failures)} cells failed to run (--strict)")
    config = write_mkdocs_config(work_dir, nav_for(found, nbs_path))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--config-file", str(config),
                    "--site-dir", str(site_dir.resolve()), *(["--strict"] if strict else [])], check=True,
                   env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # mkdocs-material's banner about its end of life
    print(f"mkdocs rendered {len(found)} pages into {site_dir} ({_size_mb(site_dir):.1f} MB) "
          f"in {time.perf_counter() - started:.0f} s")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site-dir", type=Path, default=ROOT/"_docs", help="where the site goes (default: _docs)")
    parser.add_argument("--work-dir", type=Path, default=ROOT/"_proc_mkdocs", help="processed notebooks and the generated mkdocs.yml")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="notebooks processed at once")
    parser.add_argument("--execute", action="store_true", help="run every cell (as nbdev-test does) so that pages show outputs")
    parser.add_argument("--strict", action="store_true", help="fail when a cell fails to run or mkdocs warns")
    parser.add_argument("--only", default="*.ipynb", help="only the notebooks whose file name matches this glob (a preview)")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    build(args.site_dir, args.work_dir.resolve(), args.workers, args.execute, args.strict, args.only)
    print(f"docs built in {time.perf_counter() - started:.0f} s: open {args.site_dir/'index.html'}")


if __name__ == "__main__":
    # run as docs.build, so that the spawned workers unpickle `process_notebook` from a module that IPython's shell (which
    # takes over `__main__` in each worker) leaves alone
    sys.path.insert(0, str(ROOT))
    from docs.build import main as main_in_module
    main_in_module()
