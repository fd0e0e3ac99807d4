"""Ensemble of finished runs on the same split: average the models' class probabilities on valid and on test.

    .venv/bin/python bench/ensemble_runs.py RUN_DIR RUN_DIR [RUN_DIR ...] [--threads N] [--size K] [--cache DIR]

Each run's `model/` scores the valid and test splits of the first run (every run must hold the same split). Printed: each
model's and the ensemble's valid macro-F1 and test accuracy, and the paired bootstrap of the ensemble's test accuracy
against each member and against the TF-IDF + LR baseline (`baseline_predicted` in the first run's test predictions), by
`bigmodel_nb.evaluate.paired_accuracy_gain`. With `--size K`, also every K-model subset of the runs: the subset's
average against the member a `train.restarts` choice would keep (best valid macro-F1), on valid and on test, the mean over
subsets, and a valid-only comparison free of the chosen member's selection bias: choose on a random half of valid, score
the chosen member and the average on the other half. The training stage averages its restarts with `train.ensemble`,
and otherwise keeps the one with the best valid macro-F1.
"""
import argparse, itertools, sys
from pathlib import Path

import numpy as np, pandas as pd, torch
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bigmodel_nb.config import load_config
import bigmodel_nb.heads  # registers the mean-pooling and averaged classifiers with the Auto classes
from bigmodel_nb.evaluate import paired_accuracy_gain
from bigmodel_nb.inference import predict_proba
from bigmodel_nb.rundir import RunDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", default=None, help="a folder to keep each run's valid/test probabilities in (reused while model/ is unchanged)")
    parser.add_argument("--size", type=int, default=None, help="also compare every subset of this many runs")
    args = parser.parse_args()
    if len(args.runs) < 2: sys.exit("give at least two run folders")
    if args.threads: torch.set_num_threads(args.threads)
    first = Path(args.runs[0])
    splits = {name: pd.read_parquet(RunDir(first).split(name)) for name in ("valid", "test")}
    for run in args.runs[1:]:
        for name, frame in splits.items():
            other = pd.read_parquet(RunDir(run).split(name))
            if len(other) != len(frame) or not (other["text"].values == frame["text"].values).all():
                sys.exit(f"{run}: its {name} split differs from {first}'s; an ensemble comparison needs the same split")
    max_length = load_config(RunDir(first).config).model.max_length
    probabilities = {}
    for run in args.runs:
        cached = Path(args.cache)/f"{Path(run).resolve().as_posix().strip('/').replace('/', '_')}.npz" if args.cache else None
        if cached and cached.exists() and cached.stat().st_mtime > (RunDir(run).model/"model.safetensors").stat().st_mtime:
            probabilities[run] = dict(np.load(cached)); print(f"{run}: probabilities from {cached}", flush=True); continue
        model = AutoModelForSequenceClassification.from_pretrained(RunDir(run).model).eval()
        tokenizer = AutoTokenizer.from_pretrained(RunDir(run).model)
        probabilities[run] = {name: predict_proba(model, tokenizer, frame["text"].tolist(), max_length)
                              for name, frame in splits.items()}
        if cached: cached.parent.mkdir(parents=True, exist_ok=True); np.savez(cached, **probabilities[run])
        print(f"scored {run}", flush=True)
    probabilities["ensemble"] = {name: np.mean([probabilities[run][name] for run in args.runs], axis=0) for name in splits}
    labels = {name: frame["label"].to_numpy() for name, frame in splits.items()}
    predicted = {key: {name: value.argmax(axis=1) for name, value in by_split.items()} for key, by_split in probabilities.items()}
    for key, by_split in predicted.items():
        print(f"{key}: valid macro-F1 {f1_score(labels['valid'], by_split['valid'], average='macro'):.4f}, "
              f"test accuracy {(by_split['test'] == labels['test']).mean():.4f}")
    test_predictions = pd.read_parquet(RunDir(first).test_predictions)
    if not (test_predictions["text"].values == splits["test"]["text"].values).all():
        sys.exit(f"{RunDir(first).test_predictions} is not in the test split's order")
    if args.size: compare_subsets(args.runs, args.size, probabilities, labels)
    comparisons = {run: predicted[run]["test"] for run in args.runs}
    comparisons["tfidf"] = test_predictions["baseline_predicted"].to_numpy()
    for other, other_predictions in comparisons.items():
        gain = paired_accuracy_gain(labels["test"], predicted["ensemble"]["test"], other_predictions, samples=2000)
        low, high = gain["accuracy_gain_ci"]
        print(f"ensemble - {other}: {gain['accuracy_gain'] * 100:+.2f} points (paired 95% CI {low * 100:+.2f} … {high * 100:+.2f})")


HALVINGS = 200


def compare_subsets(runs: list[str], size: int, probabilities: dict, labels: dict) -> None:
    "Every `size`-run subset: its averaged probabilities against its member with the best valid macro-F1."
    def scores(by_split):
        predicted = {name: value.argmax(axis=1) for name, value in by_split.items()}
        return (f1_score(labels["valid"], predicted["valid"], average="macro"), (predicted["test"] == labels["test"]).mean())
    single = {run: scores(probabilities[run]) for run in runs}
    rows = []
    for subset in itertools.combinations(runs, size):
        chosen = max(subset, key=lambda run: single[run][0])  # what train.restarts keeps (ties: the earliest)
        average = scores({name: np.mean([probabilities[run][name] for run in subset], axis=0) for name in labels})
        rows.append({"subset": " + ".join(Path(run).name for run in subset), "chosen": Path(chosen).name,
                     "chosen_valid_f1": single[chosen][0], "average_valid_f1": average[0],
                     "chosen_test_acc": single[chosen][1], "average_test_acc": average[1]})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    # the chosen member's valid score is biased upwards (it won on those texts); an unbiased valid-only comparison: choose
    # on a random half of valid, score the chosen member and the average on the other half, over many halvings
    rng, valid_labels = np.random.default_rng(0), labels["valid"]
    predicted = {run: probabilities[run]["valid"].argmax(axis=1) for run in runs}
    f1 = lambda rows, values: f1_score(valid_labels[rows], values[rows], average="macro")
    gains = []
    for subset in itertools.combinations(runs, size):
        average = np.mean([probabilities[run]["valid"] for run in subset], axis=0).argmax(axis=1)
        for _ in range(HALVINGS):
            order = rng.permutation(len(valid_labels))
            choose_on, score_on = order[:len(order) // 2], order[len(order) // 2:]
            chosen = max(subset, key=lambda run: f1(choose_on, predicted[run]))
            gains.append(f1(score_on, average) - f1(score_on, predicted[chosen]))
    gains = np.array(gains)
    print(f"valid split in halves ({HALVINGS} random halvings per subset): averaging - choosing on the other half, macro-F1 "
          f"{gains.mean() * 100:+.2f} points (average higher in {(gains > 0).mean():.0%} of halvings, lower in {(gains < 0).mean():.0%})")
    print(f"mean over {len(table)} subsets of {size}: valid macro-F1 chosen {table.chosen_valid_f1.mean():.4f}, "
          f"average {table.average_valid_f1.mean():.4f}; test accuracy chosen {table.chosen_test_acc.mean():.4f}, "
          f"average {table.average_test_acc.mean():.4f}; the average higher on valid in "
          f"{(table.average_valid_f1 > table.chosen_valid_f1).sum()} of {len(table)}, on test in "
          f"{(table.average_test_acc > table.chosen_test_acc).sum()}")


if __name__ == "__main__": main()
