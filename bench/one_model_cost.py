"""One model's cost for an averaged model (`train.ensemble`): the pair, each member alone, and the members' weight average
(fp32 and the compress stage's int8 of it), scored on the run's test split and timed at batch 32, interleaved, in one
process; then paired bootstrap intervals of each against the pair. The figures are printed and written to
RUN_DIR/logs/one_model_cost.json.

    .venv/bin/python bench/one_model_cost.py RUN_DIR [--repeats 20] [--threads N]

RUN_DIR is a finished run of configs/full.yaml (or any run whose `model/` is an averaged model whose members share one
architecture) whose compress stage built `weight_average_int8`. Latency is the median of `--repeats` calls on 32 texts of
64 tokens (the compress stage's measurement), with `--threads` torch threads (default: the run's compress.threads).
"""
import argparse, json, sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def paired(right_a, right_b, samples=2000, seed=0):
    "Mean of a − b (accuracy points) and its 95% percentile bootstrap interval over texts."
    diff = right_a.astype(float) - right_b.astype(float)
    draws = np.random.default_rng(seed).integers(0, len(diff), size=(samples, len(diff)))
    means = diff[draws].mean(1)
    return 100 * diff.mean(), 100 * np.percentile(means, 2.5), 100 * np.percentile(means, 97.5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from transformers import AutoModelForSequenceClassification
    from bigmodel_nb.compress import fixed_length_batch, measure_latency, weight_average, LATENCY_LENGTH
    from bigmodel_nb.config import load_config
    from bigmodel_nb.inference import TorchRunner, load_variant, predict_logits
    from bigmodel_nb.modeling import load_tokenizer
    from bigmodel_nb.rundir import RunDir, load_splits
    run = RunDir(args.run)
    config = load_config(run.config)
    threads = args.threads or config.compress.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    pair = AutoModelForSequenceClassification.from_pretrained(run.model).eval()
    tokenizer, test = load_tokenizer(run.model), load_splits(run)["test"]
    models = {"pair (fp32)": TorchRunner(pair),
              **{f"member {i} (seed {seed}, fp32)": TorchRunner(member.eval()) for i, (member, seed) in enumerate(zip(pair.members, pair.config.seeds))},
              "weight average (fp32)": TorchRunner(weight_average(pair)),
              "weight average (int8)": load_variant(run.variant("weight_average_int8")).runner}
    labels = test["label"].to_numpy()
    right = {name: predict_logits(runner, tokenizer, test["text"], config.model.max_length, 64).argmax(1) == labels
             for name, runner in models.items()}
    batch = {32: fixed_length_batch(tokenizer, test["text"], 32)}
    latency = measure_latency(models, batch, args.repeats)
    reference, member = latency["pair (fp32)"][32], latency["member 0 (seed 42, fp32)"][32]
    rows = []
    for name in models:
        gain = paired(right[name], right["pair (fp32)"]) if name != "pair (fp32)" else (0.0, 0.0, 0.0)
        rows.append({"model": name, "test_accuracy": round(float(right[name].mean()), 4),
                     "vs_pair_points": [round(value, 2) for value in gain], "latency_ms_b32": round(latency[name][32], 1),
                     "x_member_latency": round(latency[name][32] / member, 2), "x_pair_latency": round(latency[name][32] / reference, 2)})
        print(f"{name:>28}: accuracy {rows[-1]['test_accuracy']:.4f} ({gain[0]:+.2f} points vs the pair, 95% {gain[1]:+.2f} … {gain[2]:+.2f}), "
              f"b=32×{LATENCY_LENGTH} {latency[name][32]:.1f} ms ({rows[-1]['x_member_latency']:.2f}× one member)", flush=True)
    result = {"run": str(run.root), "threads": threads, "repeats": args.repeats, "test_texts": len(test), "rows": rows}
    (run.logs/"one_model_cost.json").write_text(json.dumps(result, indent=1))
    print(f"written to {run.logs/'one_model_cost.json'}")


if __name__ == "__main__":
    main()
