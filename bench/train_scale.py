"""One epoch of the default model on a large data set: the train stage alone on a run folder whose data and tokenizer
stages already ran (for example bench/data_scale.py's run folder for 1M rows); prints wall time, samples/s and peak RSS.

    .venv/bin/python bench/train_scale.py "/tmp/bigmodel_data_scale/run-this tree-1000000"
    .venv/bin/python bench/train_scale.py RUN --epochs 0.01        # a smoke test: 1% of the epoch

The run folder gets configs/default.yaml's model and training settings with `train.epochs: 1` (`--epochs`), the data source
of its data stage (the CSV under it), `--evals` evaluations (and checkpoints) per epoch on a stratified sample of
`--eval-sample` valid texts (`train.eval_sample`: evaluating 100,000 valid texts eight times would cost more than an
hour here), and nothing else changed. The epoch may be run in pieces: stop the script (Ctrl-C, or kill it) and run the same
command again; the training continues from its last complete checkpoint (the steps after it are trained again). Each
piece is recorded in RUN/logs/train_scale.json (first and last step, seconds, peak RSS), rewritten at every memory line,
so a killed piece is recorded too; the end prints every piece and their sum. Peak RSS is the process's
`VmHWM` (the training process: no worker processes); every `--every` seconds a line on stderr gives the resident memory then,
so a reader sees whether it stays bounded. Not a test: it takes about two hours for 1M rows.
"""
import argparse, json, resource, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def _status(field):
    "A field of /proc/self/status in MB (Linux), or None."
    try: return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field + ":"))) / 1024
    except (OSError, StopIteration): return None

def _record_piece(run, pieces, first_step, started):
    "Rewrite RUN/logs/train_scale.json with the earlier pieces and this one so far."
    from bigmodel_nb.core import write_json
    from bigmodel_nb.rundir import read_progress
    step = (read_progress(run) or {}).get("completed", first_step)
    piece = {"first_step": first_step, "last_step": step, "seconds": round(time.perf_counter() - started, 1),
             "peak_rss_mb": round(_status("VmHWM") or 0), "ended": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(run.logs/"train_scale.json", pieces + [piece])
    return piece

def _sample(every, started, stop, record):
    "Print the resident memory every `every` seconds until `stop` is set, and record the piece."
    while not stop.wait(every):
        record()
        print(f"rss {_status('VmRSS'):.0f} MB, peak {_status('VmHWM'):.0f} MB at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder whose data and tokenizer stages ran")
    parser.add_argument("--csv", default=None, help="the CSV its data stage read (default: the one named in its data card)")
    parser.add_argument("--epochs", type=float, default=1.0, help="train.epochs (default one epoch)")
    parser.add_argument("--every", type=float, default=300, help="seconds between memory lines on stderr")
    parser.add_argument("--evals", type=int, default=8, help="evaluations and checkpoints per epoch (train.evals_per_epoch)")
    parser.add_argument("--eval-sample", type=int, default=10_000, help="valid texts each evaluation reads (train.eval_sample)")
    parser.add_argument("-p", "--override", action="append", default=[], help="more key=value config overrides")
    args = parser.parse_args(argv)
    from bigmodel_nb.config import load_config
    from bigmodel_nb.core import read_json
    from bigmodel_nb.rundir import RunDir
    from bigmodel_nb.stage import get_stage
    run = RunDir(args.run)
    csv = args.csv or next(iter(read_json(run.card)["sources"]))
    overrides = [f'data.sources=[{{"path": "{csv}"}}]', f"train.epochs={args.epochs}", f"train.evals_per_epoch={args.evals}",
                 f"train.eval_sample={args.eval_sample}", *args.override]
    config = load_config(ROOT/"configs/default.yaml", overrides)
    pieces = read_json(run.logs/"train_scale.json") or []
    from bigmodel_nb.artifacts import last_complete_checkpoint
    resume = last_complete_checkpoint(run.checkpoints, clean=False, on_skip=lambda line: None)
    first_step = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0  # the training goes on from there
    if not first_step: pieces = []  # a fresh epoch
    started, stop = time.perf_counter(), threading.Event()
    record = lambda: _record_piece(run, pieces, first_step, started)
    threading.Thread(target=_sample, args=(args.every, started, stop, record), daemon=True).start()
    try: result = get_stage("train").run(config, run.root, force=True)
    finally: stop.set(); piece = record()
    seconds = time.perf_counter() - started
    for number, part in enumerate(pieces + [piece], 1):
        print(f"piece {number}: steps {part['first_step']}–{part['last_step']}, {part['seconds']:.0f} s, peak RSS {part['peak_rss_mb']} MB")
    train = result.metrics.get("train", {})
    figures = {"rows_train": train.get("train_examples"), "valid_examples": train.get("valid_examples"),
               "resumed_from": train.get("resumed_from"), "steps": train.get("steps"), "epochs_run": train.get("epochs_run"),
               "train_seconds": train.get("train_seconds"), "stage_seconds": round(seconds, 1),
               "all_pieces_seconds": round(sum(part["seconds"] for part in pieces + [piece]), 1),
               "peak_rss_mb_all_pieces": max(part["peak_rss_mb"] for part in pieces + [piece]),
               "samples_per_second": train.get("samples_per_second"), "best_valid_macro_f1": train.get("best_valid_macro_f1"),
               "peak_rss_mb": round(_status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "threads": train.get("threads")}
    print(json.dumps(figures, indent=1))

if __name__ == "__main__":
    main()
