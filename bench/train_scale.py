"""One epoch of the default model on a large data set: the train stage alone on a run folder whose data and tokenizer
stages already ran (for example bench/data_scale.py's run folder for 1M rows); prints wall time, samples/s and peak RSS.

    .venv/bin/python bench/train_scale.py "/tmp/bigmodel_data_scale/run-this tree-1000000"
    .venv/bin/python bench/train_scale.py RUN --epochs 0.01        # a smoke test: 1% of the epoch

The run folder gets configs/default.yaml's model and training settings with `train.epochs: 1` (`--epochs`; one evaluation on valid
at the end), the data source of its data stage (the CSV under it), and nothing else changed. Peak RSS is the process's
`ru_maxrss` (the training process: no worker processes). Not a test: it takes about an hour and a half for 1M rows.
"""
import argparse, json, resource, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder whose data and tokenizer stages ran")
    parser.add_argument("--csv", default=None, help="the CSV its data stage read (default: the one named in its data card)")
    parser.add_argument("--epochs", type=float, default=1.0, help="train.epochs (default one epoch)")
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
    started = time.perf_counter()
    result = get_stage("train").run(config, run.root, force=True)
    seconds = time.perf_counter() - started
    train = result.metrics.get("train", {})
    figures = {"rows_train": train.get("train_examples"), "steps": train.get("steps"), "epochs_run": train.get("epochs_run"),
               "train_seconds": train.get("train_seconds"), "stage_seconds": round(seconds, 1),
               "samples_per_second": train.get("samples_per_second"), "best_valid_macro_f1": train.get("best_valid_macro_f1"),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "threads": train.get("threads")}
    print(json.dumps(figures, indent=1))

if __name__ == "__main__":
    main()
