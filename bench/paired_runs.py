"""Paired bootstrap of test accuracy between finished runs on the same split, and of each run vs the TF-IDF + LR baseline.

    .venv/bin/python bench/paired_runs.py RUN_DIR [RUN_DIR ...]

The baseline's per-text predictions come from the first run's `data/test_predictions.parquet` (column `baseline_predicted`,
written by the evaluate stage); for runs evaluated before that column existed, the baseline is refitted with
`bigmodel_nb.evaluate.tfidf_predictions`, the function the evaluate stage uses.
"""
import sys
import numpy as np, pandas as pd
from bigmodel_nb.evaluate import tfidf_predictions
from bigmodel_nb.rundir import RunDir

def main(runs: list[str], samples: int = 2000) -> None:
    if not runs: sys.exit(__doc__)
    preds = {run: pd.read_parquet(RunDir(run).test_predictions) for run in runs}
    first = preds[runs[0]]
    for run in runs[1:]:
        if len(preds[run]) != len(first) or not (preds[run]["text"].values == first["text"].values).all():
            sys.exit(f"{run}: its test split differs from {runs[0]}'s; paired comparisons need the same split (same data and seed)")
    right = {run: (p["predicted"] == p["label"]).to_numpy() for run, p in preds.items()}
    if "baseline_predicted" in first: baseline = first["baseline_predicted"].to_numpy()
    else: baseline = tfidf_predictions(pd.read_parquet(RunDir(runs[0]).split("train")), first["text"])
    right["tfidf"] = baseline == first["label"].to_numpy()
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(first), size=(samples, len(first)))
    names = list(right)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = right[a].astype(float) - right[b].astype(float)
            low, high = np.percentile(diff[draws].mean(axis=1) * 100, [2.5, 97.5])
            print(f"{a} vs {b}: {right[a].mean():.4f} vs {right[b].mean():.4f}, diff {diff.mean() * 100:+.2f} pts, "
                  f"95% CI {low:+.2f} … {high:+.2f}; right only in first {int((right[a] & ~right[b]).sum())}, "
                  f"only in second {int((~right[a] & right[b]).sum())}")

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]): print(__doc__); sys.exit(0)
    main(sys.argv[1:])
