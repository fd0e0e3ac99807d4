"""One epoch of the default model on a large data set: the train stage alone on a run folder whose data and tokenizer
stages already ran (for example bench/data_scale.py's run folder for 1M rows); prints wall time, samples/s and peak RSS.

    .venv/bin/python bench/train_scale.py "/tmp/bigmodel_data_scale/run-this tree-1000000"
    .venv/bin/python bench/train_scale.py RUN --epochs 0.01        # a smoke test: 1% of the epoch

The run folder gets configs/default.yaml's model and training settings with `train.epochs: 1` (`--epochs`; one evaluation on valid
at the end), the data source of its data stage (the CSV under it), and nothing else changed. Peak RSS is the process's
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

def _sample(every, started, stop):
    "Print the resident memory every `every` seconds until `stop` is set."
    while not stop.wait(every):
        print(f"rss {_status('VmRSS'):.0f} MB, peak {_status('VmHWM'):.0f} MB at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder whose data and tokenizer stages ran")
    parser.add_argument("--csv", default=None, help="the CSV its data stage read (default: the one named in its data card)")
    parser.add_argument("--epochs", type=float, default=1.0, help="train.epochs (default one epoch)")
    parser.add_argument("--every", type=float, default=300, help="seconds between memory lines on stderr")
    parser.add_argument("-p", "--override", action="append", default=[], help="more key=value config overrides")
    args = parser.parse_args(argv)
    from bigmodel_nb.config import load_config
    from bigmodel_nb.core import read_json
    from bigmodel_nb.rundir import RunDir
    from bigmodel_nb.stage import get_stage
    run = RunDir(args.run)
    csv = args.csv or next(iter(read_json(run.card)["sources"]))
    overrides = [f'data.sources=[{{"path": "{csv}"}}]', f"train.epochs={args.epochs}", "train.evals_per_epoch=1", *args.override]
    config = load_config(ROOT/"configs/default.yaml", overrides)
    started, stop = time.perf_counter(), threading.Event()
    threading.Thread(target=_sample, args=(args.every, started, stop), daemon=True).start()
    try: result = get_stage("train").run(config, run.root, force=True)
    finally: stop.set()
    seconds = time.perf_counter() - started
    train = result.metrics.get("train", {})
    figures = {"rows_train": train.get("train_examples"), "steps": train.get("steps"), "epochs_run": train.get("epochs_run"),
               "train_seconds": train.get("train_seconds"), "stage_seconds": round(seconds, 1),
               "samples_per_second": train.get("samples_per_second"), "best_valid_macro_f1": train.get("best_valid_macro_f1"),
               "peak_rss_mb": round(_status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "threads": train.get("threads")}
    print(json.dumps(figures, indent=1))

if __name__ == "__main__":
    main()
