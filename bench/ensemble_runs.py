"""Ensemble of finished runs on the same split: average the models' class probabilities on valid and on test.

    .venv/bin/python bench/ensemble_runs.py RUN_DIR RUN_DIR [RUN_DIR ...] [--threads N]

Each run's `model/` scores the valid and test splits of the first run (every run must hold the same split). Printed: each
model's and the ensemble's valid macro-F1 and test accuracy, and the paired bootstrap of the ensemble's test accuracy
against each member and against the TF-IDF + LR baseline (`baseline_predicted` in the first run's test predictions), by
`bigmodel_nb.evaluate.paired_accuracy_gain`. An exploration of what averaging several trainings would buy; the training
stage keeps one model (`train.restarts` chooses on valid).
"""
import argparse, sys
from pathlib import Path

import numpy as np, pandas as pd, torch
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bigmodel_nb.config import load_config
import bigmodel_nb.train  # registers the mean-pooling classifier with the Auto classes
from bigmodel_nb.evaluate import paired_accuracy_gain, predict_proba


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if len(args.runs) < 2: sys.exit("give at least two run folders")
    if args.threads: torch.set_num_threads(args.threads)
    first = Path(args.runs[0])
    splits = {name: pd.read_parquet(first/"data"/f"{name}.parquet") for name in ("valid", "test")}
    for run in args.runs[1:]:
        for name, frame in splits.items():
            other = pd.read_parquet(Path(run)/"data"/f"{name}.parquet")
            if len(other) != len(frame) or not (other["text"].values == frame["text"].values).all():
                sys.exit(f"{run}: its {name} split differs from {first}'s; an ensemble comparison needs the same split")
    max_length = load_config(first/"config.yaml").model.max_length
    probabilities = {}
    for run in args.runs:
        model = AutoModelForSequenceClassification.from_pretrained(Path(run)/"model").eval()
        tokenizer = AutoTokenizer.from_pretrained(Path(run)/"model")
        probabilities[run] = {name: predict_proba(model, tokenizer, frame["text"].tolist(), max_length)
                              for name, frame in splits.items()}
        print(f"scored {run}", flush=True)
    probabilities["ensemble"] = {name: np.mean([probabilities[run][name] for run in args.runs], axis=0) for name in splits}
    labels = {name: frame["label"].to_numpy() for name, frame in splits.items()}
    predicted = {key: {name: value.argmax(axis=1) for name, value in by_split.items()} for key, by_split in probabilities.items()}
    for key, by_split in predicted.items():
        print(f"{key}: valid macro-F1 {f1_score(labels['valid'], by_split['valid'], average='macro'):.4f}, "
              f"test accuracy {(by_split['test'] == labels['test']).mean():.4f}")
    test_predictions = pd.read_parquet(first/"data"/"test_predictions.parquet")
    if not (test_predictions["text"].values == splits["test"]["text"].values).all():
        sys.exit(f"{first}/data/test_predictions.parquet is not in the test split's order")
    comparisons = {run: predicted[run]["test"] for run in args.runs}
    comparisons["tfidf"] = test_predictions["baseline_predicted"].to_numpy()
    for other, other_predictions in comparisons.items():
        gain = paired_accuracy_gain(labels["test"], predicted["ensemble"]["test"], other_predictions, samples=2000)
        low, high = gain["accuracy_gain_ci"]
        print(f"ensemble - {other}: {gain['accuracy_gain'] * 100:+.2f} points (paired 95% CI {low * 100:+.2f} … {high * 100:+.2f})")


if __name__ == "__main__": main()
