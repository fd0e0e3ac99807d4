"""The docs site that `make docs` builds where Quarto is missing (docs/build.py: nbdev processes nbs/, mkdocs-material with
mkdocs-jupyter renders it): built offline into temporary folders, then checked as a reader would use it."""
import json, os, re, shutil, subprocess, sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from fastcore.docments import docments
from nbdev.config import nbpath2html

from bigmodel_nb.stage import REGISTRY

ROOT = Path(__file__).resolve().parents[1]

# Loaded by every Python process of the build (spawned workers too): a connection to anything but this machine fails
NO_NETWORK = '''
import socket
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def _local(sock, address):
    if sock.family not in (socket.AF_INET, socket.AF_INET6): return True
    return str(address[0]) in ("localhost", "127.0.0.1", "::1") or str(address[0]).startswith("127.")
def _check(sock, address):
    if not _local(sock, address): raise OSError(f"test_docs: the docs build tried to reach {address} (it must build offline)")
socket.socket.connect = lambda sock, address: (_check(sock, address), _connect(sock, address))[1]
socket.socket.connect_ex = lambda sock, address: (_check(sock, address), _connect_ex(sock, address))[1]
'''


def build_offline(tmp: Path, *options: str) -> Path:
    "Build the site into `tmp`/site with docs/build.py, the network blocked in every Python process of the build."
    (tmp/"offline").mkdir()
    (tmp/"offline"/"sitecustomize.py").write_text(NO_NETWORK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp/"offline"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "docs/build.py", "--site-dir", str(tmp/"site"), "--work-dir", str(tmp/"work"),
                             *options], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    print(result.stdout[-3000:], result.stderr[-3000:])
    assert result.returncode == 0, f"docs/build.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "test_docs: the docs build tried to reach" not in result.stdout + result.stderr
    return tmp/"site"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    "The whole site as `make docs EXECUTE=0` builds it: API docs, no cells run but those show_doc needs."
    return build_offline(tmp_path_factory.mktemp("docs"))


def stage_notebook(name: str) -> str:
    "The notebook that stage `name`'s module is exported from."
    module = REGISTRY[name].target.partition(":")[0]
    header = Path(find_spec(module).origin).read_text(encoding="utf-8")[:2000]
    return re.search(r"File to edit: \.\./nbs/(\S+\.ipynb)", header).group(1)


def stage_page(name: str) -> str:
    "The page of stage `name`'s notebook (named as nbdev-docs names it: `10_data.ipynb` -> `data.html`)."
    return nbpath2html(Path(stage_notebook(name))).name


def text_of(page: Path) -> str: return BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").get_text()


def test_every_stage_has_a_page_with_api_docs(site):
    for name in REGISTRY:
        page = site/stage_page(name)
        assert page.exists(), f"no page for stage {name!r}: {page.name} missing from the site"
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        signatures = [code.get_text() for code in soup.select("pre") if re.search(r"^\s*(def|class) \w+", code.get_text(), re.M)]
        assert signatures, f"the {name} page shows no API signature (show_doc output)"


def test_a_signature_with_its_docments(site):
    from bigmodel_nb.data import run_data
    text = text_of(site/stage_page("data"))
    assert re.search(r"def run_data\(\s*config", text), "run_data's signature is not on the data page"
    documented = {name: doc for name, doc in docments(run_data).items() if doc and name != "return"}
    assert documented, "run_data lost its docments: pick another documented function for this test"
    for name, doc in documented.items(): assert f"# {doc}" in text, f"the docment of run_data's {name!r} is not on the data page"
    assert run_data.__doc__.strip() in text


def test_home_page_links_to_every_stage(site):
    soup = BeautifulSoup((site/"index.html").read_text(encoding="utf-8"), "html.parser")
    assert "bigmodel_nb" in soup.title.get_text()
    links = {a["href"].split("#")[0] for a in soup.select("a[href]")}
    missing = [name for name in REGISTRY if stage_page(name) not in links]
    assert not missing, f"the home page does not link to the pages of: {', '.join(missing)}"


def test_executed_page_shows_outputs(tmp_path):
    "`make docs` runs the cells (nbs/ keeps no outputs): one stage's page, built alone, shows its tables and figures."
    site = build_offline(tmp_path, "--execute", "--only", stage_notebook("data"))
    page = (site/stage_page("data")).read_text(encoding="utf-8")
    assert 'src="data:image/png' in page, "no figure on the executed data page"
    assert 'class="dataframe' in page, "no table on the executed data page"


def test_site_reads_offline(site):
    "No web fonts or scripts from elsewhere; the search index is built (search runs when the site is served over HTTP)."
    for page in site.glob("*.html"):
        head = page.read_text(encoding="utf-8")
        for external in re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', head):
            pytest.fail(f"{page.name} loads {external}")
    index = json.loads((site/"search"/"search_index.json").read_text(encoding="utf-8"))
    assert any("run_data" in entry.get("text", "") for entry in index["docs"]), "the API docs are not in the search index"


def _screenshot(url: str, png: Path):
    subprocess.run([shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png}", "--window-size=1280,1600", url], capture_output=True, timeout=120)
    assert png.exists(), f"chromium wrote no screenshot of {url}"


def _not_blank(png: Path):
    from PIL import Image
    image = Image.open(png).convert("RGB").resize((320, 400))
    counts = sorted((count for count, _ in image.getcolors(maxcolors=320*400)), reverse=True)
    assert len(counts) > 50, f"{png.name} has only {len(counts)} colours: the page rendered blank"
    assert counts[0] < 0.97*sum(counts), f"{png.name} is almost all one colour: the page rendered blank"


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (Debian: apt-get install chromium): no screenshots")
def test_screenshots_are_not_blank(site, tmp_path):
    for page in ("index.html", stage_page("data")):
        png = tmp_path/f"{Path(page).stem}.png"
        _screenshot((site/page).as_uri(), png)
        _not_blank(png)
