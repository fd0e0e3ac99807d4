"""Tune workers on one Optuna study in a real PostgreSQL server: a throwaway one (the `postgres_server` fixture: initdb in a
temporary folder, a free loopback port, password auth), skipped with the reason when the server binaries are missing."""
import glob, json, os, secrets, shutil, signal, socket, subprocess, tempfile, time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pandas as pd
import pytest

from conftest import ROOT, cli_path, run_cli
from test_tune import settings

def postgres_binaries() -> Path|None:
    "The folder holding initdb and pg_ctl: next to `initdb` on PATH, else Debian's /usr/lib/postgresql/<newest version>/bin."
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    return next((folder for folder in candidates if (folder/"initdb").is_file() and (folder/"pg_ctl").is_file()), None)

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

def as_owner(user: str|None) -> list[str]:
    "The prefix that runs a command as the server's owner (PostgreSQL refuses to run as root)."
    return ["runuser", "-u", user, "--"] if user else []

class PostgresServer:
    "A PostgreSQL server in its own temporary folder, on a free loopback port; `stop` ends it by pg_ctl, then by its PID, and removes the folder."
    def __init__(self, bin_dir: Path):
        self.bin_dir, self.user = bin_dir, None
        if os.geteuid() == 0:
            import pwd
            try: owner = pwd.getpwnam("postgres")
            except KeyError: pytest.skip("running as root and there is no `postgres` system user to own a PostgreSQL server")
            self.user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="bigmodel-nb-pg-"))  # not under pytest's tmp_path: the postgres user could not enter it
        if self.user: os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data, self.sockets, self.log, self.port = self.root/"data", self.root/"sockets", self.root/"server.log", None

    def _as_owner(self, *command, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*as_owner(self.user), *map(str, command)], cwd=self.root, capture_output=True, text=True, **kwargs)

    def start(self) -> None:
        made = self._as_owner("mkdir", "-p", self.sockets)
        if made.returncode: raise RuntimeError(f"cannot make {self.sockets} as {self.user}: {made.stderr}")
        made = self._as_owner(self.bin_dir/"initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust",
                              "--auth-host=scram-sha-256", "--no-locale", "--encoding=UTF8", "--no-sync", timeout=180)
        if made.returncode: raise RuntimeError(f"initdb failed:\n{made.stdout}\n{made.stderr}")
        for attempt in range(3):  # a free port can be taken by someone else before the server binds it: try another
            self.port = free_port()
            options = f"-p {self.port} -k {self.sockets} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            started = self._as_owner(self.bin_dir/"pg_ctl", "start", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options,
                                     timeout=120)
            if started.returncode == 0: return
            self.kill()
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RuntimeError(f"pg_ctl start failed 3 times:\n{started.stdout}\n{started.stderr}\n{log}")

    def pid(self) -> int|None:
        try: return int((self.data/"postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError): return None

    def kill(self) -> None:
        "Stop the server now: pg_ctl stop -m immediate, then SIGKILL to its postmaster's PID if it is still there."
        pid = self.pid()
        if pid is None: return
        self._as_owner(self.bin_dir/"pg_ctl", "stop", "-D", self.data, "-m", "immediate", "-w", "-t", "30", timeout=60)
        try:
            os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)  # still alive after pg_ctl: end this postmaster (its children exit with it)
        except ProcessLookupError: pass

    def stop(self) -> None:
        try: self.kill()
        finally: shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, *statements: str) -> None:
        "Run statements as the superuser through the server's Unix socket (trust auth), outside a transaction."
        import psycopg
        with psycopg.connect(host=str(self.sockets), port=self.port, user="postgres", dbname="postgres", autocommit=True) as connection:
            for statement in statements: connection.execute(statement)

def sqlalchemy_postgres_scheme() -> str:
    "`postgresql` when SQLAlchemy's default PostgreSQL driver is psycopg 3 (SQLAlchemy 2.1+), else `postgresql+psycopg`."
    from sqlalchemy.engine import make_url
    return "postgresql" if make_url("postgresql://").get_dialect().driver == "psycopg" else "postgresql+psycopg"

@pytest.fixture(scope="module")
def postgres_server():
    "A fresh PostgreSQL server on 127.0.0.1 with a role `tuner` that logs in with a password (`server.password`); stopped and removed after the module."
    bin_dir = postgres_binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: "
                    "install Debian's `postgresql` package (.ci/run does when apt-get is available)")
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (pip install -e '.[dev]')")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        server.password = f"Pw{secrets.token_hex(8)}/+"  # characters a URL must escape: the storage URL carries them percent-encoded
        server.sql(f"CREATE ROLE tuner LOGIN PASSWORD '{server.password}'")
        yield server
    finally:
        server.stop()

def new_database(server: PostgresServer, name: str) -> SimpleNamespace:
    "An empty database `name` owned by `tuner`: its SQLAlchemy/Optuna URL, the password, and a libpq conninfo for psycopg."
    server.sql(f"CREATE DATABASE {name} OWNER tuner")
    return SimpleNamespace(url=f"{sqlalchemy_postgres_scheme()}://tuner:{quote(server.password, safe='')}@127.0.0.1:{server.port}/{name}",
                           password=server.password,
                           conninfo=f"host=127.0.0.1 port={server.port} dbname={name} user=tuner password='{server.password}'")

@pytest.fixture(scope="module")
def postgres_url(postgres_server) -> SimpleNamespace:
    return new_database(postgres_server, "studies")

def trials_started(connection) -> int:
    "How many trials the database holds, read with plain SQL: Optuna's RDBStorage would create its tables, racing the run that does."
    try: return connection.execute("SELECT count(*) FROM trials").fetchone()[0]
    except Exception: return 0  # no study yet: the table does not exist

class TwoWorkers(SimpleNamespace):
    "What the two-worker run left: url, password, run_dir, prepared (the --until tokenizer run), main/worker (Popen), main_out, worker_out, seconds."

@pytest.fixture(scope="module")
def two_workers(postgres_url, tmp_path_factory) -> TwoWorkers:
    "A tiny run whose study lives in PostgreSQL: `run --resume` and a `tune-worker` started once the study has a trial running."
    import psycopg
    url, password = postgres_url.url, postgres_url.password
    tmp_path = tmp_path_factory.mktemp("tune_postgres")
    run_dir, began = tmp_path/"run", time.time()
    # test_tune.py's tiny settings, a little smaller still; every trial's settings drawn at random (startup_trials = trials)
    prepared = run_cli("run", "configs/quick.yaml", *settings(f"tune.storage={url}", "tune.trials=8", "train.epochs=2", "tune.pruner=none",
                                                              "tune.startup_trials=8", "train.evals_per_epoch=1", "data.sample=400"),
                       "--until", "tokenizer", "--out", str(run_dir))
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path/"main.log", "w") as main_log, open(tmp_path/"worker.log", "w") as worker_log:
        main = subprocess.Popen([cli_path(), "run", "--resume", str(run_dir)], cwd=ROOT, stdout=main_log, stderr=subprocess.STDOUT, env=env)
        worker = None
        try:
            deadline = time.time() + 600
            with psycopg.connect(postgres_url.conninfo, autocommit=True) as connection:
                while main.poll() is None and time.time() < deadline and not trials_started(connection): time.sleep(0.3)
            worker = subprocess.Popen([cli_path(), "tune-worker", str(run_dir)], cwd=ROOT, stdout=worker_log, stderr=subprocess.STDOUT, env=env)
            main.wait(timeout=600); worker.wait(timeout=600)
        finally:
            for process in (main, worker):
                if process is not None and process.poll() is None: process.kill(); process.wait(timeout=60)
    return TwoWorkers(url=url, password=password, run_dir=run_dir, prepared=prepared, main=main, worker=worker,
                      main_out=(tmp_path/"main.log").read_text(), worker_out=(tmp_path/"worker.log").read_text(), seconds=time.time() - began)

def shown(url: str, password: str) -> str:
    return url.replace(f":{quote(password, safe='')}@", ":***@")

def test_two_workers_share_one_postgres_study(two_workers):
    import optuna
    from optuna.trial import TrialState
    run = two_workers
    assert run.main.returncode == 0, run.main_out[-3000:]
    assert run.worker.returncode == 0, run.worker_out[-3000:]
    assert f"joining study tuned in {shown(run.url, run.password)}" in run.worker_out, run.worker_out[-3000:]

    # the study in the database: at least 8 finished trials, numbered 0..n-1 without a gap or a duplicate, each with a value
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name="tuned", storage=run.url).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials))), numbers
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) >= 8, [(t.number, t.state.name) for t in trials]
    assert all(t.state == TrialState.COMPLETE for t in finished), "tune.pruner=none prunes nothing"
    assert all(t.value is not None for t in finished) and not [t.number for t in trials if t.state == TrialState.RUNNING]
    by_worker = pd.Series([t.user_attrs.get("worker") for t in finished]).value_counts()
    assert len(by_worker) == 2 and by_worker.index.notna().all(), by_worker

    # the run's trials table and metrics.json: a snapshot taken when the run's own worker stopped (the other one may
    # still have had a trial running then), consistent with itself and with the database
    table = pd.read_csv(run.run_dir/"tune"/"trials.csv")
    assert sorted(table["trial"]) == list(range(len(table))) and set(table["trial"]) <= set(numbers), table
    table_finished = table[table["state"].isin(["complete", "pruned"])]
    assert len(table_finished) >= 8 and table_finished["value"].notna().all(), table
    assert table_finished["worker"].nunique() == 2, table
    values = {t.number: t.value for t in finished}
    assert all(row.value == pytest.approx(values.get(row.trial), rel=1e-12) for row in table_finished.itertuples()), (table, values)
    tune = json.loads((run.run_dir/"metrics.json").read_text())["tune"]
    assert tune["storage"] == shown(run.url, run.password) and tune["study_name"] == "tuned"
    # run_tune reads the study for these counts a moment before it writes trials.csv: the other worker's last trial may
    # finish in between, so the counts may lag the table by that trial, never lead it
    assert 8 <= tune["n_complete"] + tune["n_pruned"] <= len(table_finished) and tune["n_failed"] == 0, (tune, table)
    assert tune["n_trials"] <= len(table), (tune, table)
    print(f"\n{run.seconds:.0f} s; finished trials per worker: {by_worker.to_dict()}")

def test_the_storage_password_is_never_shown(two_workers):
    "The password is in the run's config.yaml (the user put it there) but in nothing the CLI prints or the run reports."
    run = two_workers
    secrets_ = {"password": run.password, "password (URL-encoded)": quote(run.password, safe=""), "storage URL": run.url}
    places = {"prepare stdout": run.prepared.stdout, "prepare stderr": run.prepared.stderr, "run --resume output": run.main_out,
              "tune-worker output": run.worker_out, "metrics.json": (run.run_dir/"metrics.json").read_text(encoding="utf-8"),
              "report.html": (run.run_dir/"report.html").read_text(encoding="utf-8"),
              "model_card.md": (run.run_dir/"model_card.md").read_text(encoding="utf-8"),
              **{f"notebooks/{page.name}": page.read_text(encoding="utf-8") for page in sorted((run.run_dir/"notebooks").glob("*.*"))}}
    leaks = []
    for place, text in places.items():
        for what, secret in secrets_.items():
            if secret in text:
                at = text.index(secret)
                leaks.append(f"the {what} is in {place}: ...{text[max(at - 150, 0):at + 80]!r}...")
    assert not leaks, "\n".join(leaks)

def test_workers_do_not_repeat_each_others_settings(two_workers):
    "Each trial of the shared study tries settings of its own: a worker that joins must not draw the same random settings as the first."
    import optuna
    from optuna.trial import TrialState
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    trials = optuna.load_study(study_name="tuned", storage=two_workers.url).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    seen, repeats = {}, []
    for trial in trials:
        first = seen.setdefault(tuple(sorted(trial.params.items())), trial)
        if first is not trial: repeats.append(f"trial {trial.number} (worker {trial.user_attrs.get('worker')}) repeats trial {first.number} "
                                              f"(worker {first.user_attrs.get('worker')}): {trial.params}")
    assert not repeats, "\n".join(repeats)

def test_workers_started_together_on_an_empty_database_all_open_it(postgres_server):
    "Workers on several machines may start at the same moment: each must open the storage, whoever creates Optuna's tables."
    import threading
    from bigmodel_nb.tune import open_storage
    database = new_database(postgres_server, "fresh")
    workers, start, errors = 4, threading.Barrier(4), []
    def worker():  # threads stand in for processes: each opens its own engine and connection, as a tune-worker does
        start.wait(timeout=60)
        try: open_storage(database.url).engine.dispose()
        except Exception as error: errors.append(f"{type(error).__name__}: {error}"[:400])
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads: thread.start()
    for thread in threads: thread.join(timeout=120)
    assert not errors, f"{len(errors)} of {workers} workers could not open the new study database:\n" + "\n".join(errors)
