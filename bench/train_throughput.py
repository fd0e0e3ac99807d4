"""Training throughput: samples/s of our training (random batches computed on their real tokens only, `train.unpadded`) against
the same model and data trained the way Hugging Face's text-classification example does by default, in one process, side by
side.

    .venv/bin/python bench/train_throughput.py --run RUN_DIR          # a run folder with data/ and tokenizer/ (or model/)
    .venv/bin/python bench/train_throughput.py --train-limit 1000     # quick check: prepares data and tokenizer first
    .venv/bin/python bench/train_throughput.py --run RUN_DIR --rounds 2 --json out.json
    .venv/bin/python bench/train_throughput.py --run RUN_DIR --seeds 42 1 2 3 --arms hf_default ours   # accuracy over seeds

What "the Hugging Face example's defaults" means here (examples/pytorch/text-classification/run_glue.py, and
run_classification.py alike): `max_seq_length=128` and `pad_to_max_length=True`, so every text is tokenized with
`padding="max_length", truncation=True, max_length=128` before training and batched by `default_data_collator`
(`DataCollatorWithPadding` is used only when padding to the maximum length is turned off); a plain `Trainer`, whose default
`train_sampling_strategy="random"` draws batches with a `RandomSampler` (no length grouping). That is the arm `hf_default`.
The example's other defaults (learning rate 5e-5, batch size 8, 3 epochs) are *not* reproduced: both arms use this
project's config, because the question is what padding and batching cost, not which hyper-parameters are better.

Arms (all share one data preparation, one tokenizer, the config's model built by `build_model` from the same seed, and the
same TrainingArguments from `training_arguments`: learning rate, batch size, warm-up, weight decay, schedule, epochs):
- `hf_default`: plain `Trainer`, texts padded/cut to 128 tokens, `default_data_collator`, random batches.
- `ours`: the project's training as the config sets it (`trainer_options`: `train.unpadded`, `train.group_by_length`,
  `train.label_mix`; by default random batches like `hf_default`, each computed by `TextTrainer(unpadded=True)` on its real
  tokens only, and in the last layer at each text's [CLS] only, the one position the pooler reads), with
  `DataCollatorWithPadding`, texts cut at 128 too. Same batches, same loss and gradients (to float rounding, tested in
  nbs/40_train.ipynb): the difference from `hf_default` is only which positions are computed.
- `ours_all_positions` (optional): `ours` with the last layer computed at every real token (`all_positions=True`): what
  removing the padding alone gives.
- `ours_256`: the same at the config's own `model.max_length` (256 by default): fewer texts truncated, more real tokens.
- `grouped`: length-grouped batches (`LengthGroupedTrainer`, `ShuffledLengthBatches`, the config's `train.label_mix`) with
  dynamic padding and the ordinary padded forward, cut at 128: the way to save padding by choosing which texts share a batch.
- `ours_sorted` (optional): `grouped` in pure length order, `train.label_mix` 0 whatever the config says.

Timing: wall-clock seconds of `trainer.train()` only (tokenization is done before, as the example does it in
`datasets.map`); no evaluation or checkpointing during training (`eval_strategy="no"`, `save_strategy="no"`) in any arm.
samples/s = training samples fed / seconds; real tokens/s counts only unpadded tokens (attention mask = 1); "computed
positions" counts every position fed to the model: padding included for padded arms, real tokens only for unpadded ones
(whose attention still pads each group of 8 texts to its longest, and whose last layer, unless `ours_all_positions`, computes
its query, attention output and feed-forward blocks at one position per text; neither is counted). After training, each arm's model is scored on
the whole test split (accuracy, macro-F1) by the same length-sorted, dynamically padded loop at the arm's max length
(padding does not change a prediction beyond float rounding), so the evaluation is identical for all arms.

Order: every arm first trains a throwaway model for `--warmup-steps` steps (untimed), so no arm pays the process's first
allocations and kernel choices. Round 1 then runs the arms in the order given (hf_default first), round 2 in reverse,
round 3 in the given order again, and so on (ABBA): with `--rounds 2` or more, a machine that gets busier or quieter over
time favours no arm systematically. Figures per arm are totals over its rounds; per-round ratios show the noise.

Seeds: one seed gives one test accuracy per arm, and on ~1,700 test texts one standard error is about 0.9 points, so a
single seed cannot say whether two arms are equally accurate. `--seeds S1 S2 ...` runs one round per seed (round r uses
the r-th seed, ABBA order as above); every arm of a round starts from the same seeded model, so the arms are compared
seed by seed: the summary prints each arm's mean accuracy with the spread over seeds, and the mean paired difference from
`hf_default` with its standard error.
"""
import argparse, dataclasses, json, os, shutil, sys, tempfile, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback, default_data_collator, set_seed
from transformers.utils import logging as transformers_logging

from bigmodel_nb.config import load_config
from bigmodel_nb.data import stratified_sample
from bigmodel_nb.modeling import build_model, load_tokenizer
from bigmodel_nb.rundir import RunDir, load_card, load_splits
from bigmodel_nb.stage import get_stage
from bigmodel_nb.training import trainer_options, training_arguments
from bigmodel_nb.training import LengthGroupedTrainer, classification_scores, encode_texts

HF_MAX_LENGTH = 128  # run_glue.py / run_classification.py: max_seq_length default, with pad_to_max_length=True
ARMS = ("hf_default", "ours", "grouped", "ours_256", "ours_sorted", "ours_all_positions")
GOAL_RATIO = 2.0


class PaddedTexts(torch.utils.data.Dataset):
    "Token ids padded (or cut) to one fixed length, as the example's `tokenizer(..., padding='max_length')` stores them."
    def __init__(self, tokenizer, texts, labels, max_length: int):
        encoded = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length)
        self.input_ids, self.attention_mask = encoded["input_ids"], encoded["attention_mask"]
        self.labels = [int(label) for label in labels]
    def __len__(self): return len(self.input_ids)
    def __getitem__(self, index):
        return {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index], "labels": self.labels[index]}


class CountingCollator:
    "Wraps a collator and counts what it hands the model: samples, every position (padding included) and real tokens."
    def __init__(self, collate, unpadded: bool = False):
        self.collate, self.unpadded, self.samples, self.positions, self.real_tokens = collate, unpadded, 0, 0, 0
    def __call__(self, features):
        batch = self.collate(features)
        real = int(batch["attention_mask"].sum())
        self.samples += len(features)
        self.positions += real if self.unpadded else batch["input_ids"].numel()
        self.real_tokens += real
        return batch


class ClockCallback(TrainerCallback):
    "Prints the arm, step, elapsed seconds and loss at each logging step (the benchmark's only output while training)."
    def __init__(self, arm: str): self.arm, self.started = arm, time.perf_counter()
    def on_train_begin(self, args, state, control, **kwargs): self.started = time.perf_counter()
    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)):  # the end-of-training summary log has no loss: skip it
            print(f"  [{self.arm}] step {state.global_step}/{state.max_steps}, {time.perf_counter() - self.started:.0f} s, "
                  f"loss {loss:.4f}", flush=True)


@dataclasses.dataclass
class ArmSetup:
    "One arm's training data, collator and max length (built once, reused by every round)."
    name: str
    max_length: int
    dataset: torch.utils.data.Dataset
    collate: object

    def trainer(self, config, model) -> tuple[type, dict]:
        "The arm's trainer class and keyword arguments for `model`."
        if self.name == "hf_default": return Trainer, {}
        if self.name in ("grouped", "ours_sorted"):
            return LengthGroupedTrainer, {"label_mix": 0.0 if self.name == "ours_sorted" else config.train.label_mix}
        trainer_class, options, why = trainer_options(config.train, model)  # exactly what the training stage would use
        if why: sys.exit(f"arm {self.name}: training would compute padded batches because {why}")
        return trainer_class, options | ({"all_positions": True} if self.name == "ours_all_positions" else {})


def arm_setup(name: str, tokenizer, train, config) -> ArmSetup:
    "Tokenize the train split the way arm `name` trains on it."
    if name == "hf_default":
        return ArmSetup(name, HF_MAX_LENGTH, PaddedTexts(tokenizer, train["text"], train["label"], HF_MAX_LENGTH),
                        default_data_collator)
    max_length = config.model.max_length if name == "ours_256" else HF_MAX_LENGTH
    return ArmSetup(name, max_length, encode_texts(tokenizer, train["text"], train["label"], max_length),
                    DataCollatorWithPadding(tokenizer))


def prepare_run(run: Path|None, config) -> Path:
    "A run folder with data/ and a tokenizer: the given one (read only), or a new temporary one built with the config."
    if run is not None:
        train_split = RunDir(run).split("train")
        if not train_split.exists(): sys.exit(f"{run} has no {RunDir(run).relative(train_split)}: give a run folder with data/")
        return run
    run = Path(tempfile.mkdtemp(prefix="bench-train-"))
    print(f"no --run: preparing data and tokenizer in {run}", flush=True)
    for stage in ("data", "tokenizer"): get_stage(stage).run(config, run)
    return run


def find_tokenizer(run: Path):
    "The run's tokenizer: tokenizer/ (the tokenizer stage) or model/ (a trained model folder), checked for a real vocabulary."
    run_dir = RunDir(run)
    candidates = [folder/"tokenizer.json" for folder in (run_dir.tokenizer, run_dir.model)]
    folder = next((path.parent for path in candidates if path.exists()), None)
    if folder is None: sys.exit(f"{run} has neither {' nor '.join(run_dir.relative(path) for path in candidates)}")
    tokenizer = load_tokenizer(folder)
    if len(tokenizer) < 100: sys.exit(f"the tokenizer in {folder} has only {len(tokenizer)} tokens: it did not load properly")
    return tokenizer, folder


def bench_arguments(config, output_dir: Path, train_size: int, max_steps: int = -1):
    "The project's TrainingArguments without evaluation or checkpoints during training (identical for every arm)."
    arguments = training_arguments(config, output_dir, train_size)
    return dataclasses.replace(arguments, eval_strategy="no", save_strategy="no", load_best_model_at_end=False,
                               max_steps=max_steps)


def train_arm(setup: ArmSetup, config, tokenizer, label_names: list[str], output_dir: Path, max_steps: int = -1):
    "Train a fresh model (seeded) for one arm: the model, training seconds, the collator's counts, steps, trainer options."
    set_seed(config.seed)
    model = build_model(config.model, tokenizer, label_names)
    trainer_class, options = setup.trainer(config, model)
    unpadded = options.get("unpadded", False)
    counter = CountingCollator(setup.collate, unpadded)
    trainer = trainer_class(**options, model=model, args=bench_arguments(config, output_dir, len(setup.dataset), max_steps),
                                  train_dataset=setup.dataset, data_collator=counter, processing_class=tokenizer,
                                  callbacks=[ClockCallback(setup.name)] if max_steps < 0 else [])
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if unpadded and trainer.unpadded_batches != trainer.state.global_step:
        sys.exit(f"arm {setup.name}: {trainer.unpadded_batches} of {trainer.state.global_step} steps were computed unpadded: "
                 f"the others fell back to the padded forward (a setting the unpadded path does not compute, such as label "
                 f"smoothing, or a model it cannot take), so this arm would not measure unpadded training")
    return trainer.model, seconds, counter, trainer.state.global_step, {"trainer": trainer_class.__name__, **options}


def test_scores(model, tokenizer, test, max_length: int, batch_size: int) -> dict:
    "Accuracy and macro-F1 on the test split: length-sorted batches, dynamic padding, texts cut at `max_length`."
    dataset = encode_texts(tokenizer, test["text"], test["label"], max_length)
    order = np.argsort([len(ids) for ids in dataset.input_ids], kind="stable")
    collate, logits = DataCollatorWithPadding(tokenizer), np.zeros((len(dataset), model.config.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = collate([dataset[int(row)] for row in rows])
            batch.pop("labels")
            logits[rows] = model(**batch).logits.float().numpy()
    return classification_scores(logits, np.asarray(dataset.labels))


def round_orders(arms: list[str], rounds: int) -> list[list[str]]:
    "ABBA: the given order in odd rounds, reversed in even ones."
    return [list(arms) if number % 2 == 0 else list(reversed(arms)) for number in range(rounds)]


def summarize(name: str, runs: list[dict]) -> dict:
    "Totals over an arm's rounds: rates from summed counts and seconds, scores averaged."
    seconds = sum(run["seconds"] for run in runs)
    total = lambda key: sum(run[key] for run in runs)
    return {"arm": name, "rounds": len(runs), "seconds": seconds, "samples": total("samples"), "steps": total("steps"),
            "samples_per_second": total("samples") / seconds, "real_tokens_per_second": total("real_tokens") / seconds,
            "positions_per_second": total("positions") / seconds,
            "padding_share": 1 - total("real_tokens") / total("positions"),
            "accuracy": float(np.mean([run["accuracy"] for run in runs])),
            "accuracy_sd": float(np.std([run["accuracy"] for run in runs], ddof=1)) if len(runs) > 1 else 0.0,
            "macro_f1": float(np.mean([run["macro_f1"] for run in runs]))}


def paired_differences(arm_runs: list[dict], baseline_runs: list[dict]) -> dict:
    "Test-accuracy differences from the baseline seed by seed (rounds of one seed averaged): mean and standard error."
    by_seed = {}
    for run, base in zip(arm_runs, baseline_runs): by_seed.setdefault(run["seed"], []).append(run["accuracy"] - base["accuracy"])
    per_seed = [float(np.mean(differences)) for differences in by_seed.values()]
    error = float(np.std(per_seed, ddof=1) / np.sqrt(len(per_seed))) if len(per_seed) > 1 else float("nan")
    return {"seeds": len(per_seed), "per_seed": per_seed, "mean": float(np.mean(per_seed)), "standard_error": error}


def verdict(ratio: float, accuracy_difference: float, paired: dict) -> str:
    "The goal's verdict: met (mean accuracy not below hf_default's), met within noise (paired difference within 2 SE of 0)."
    if ratio < GOAL_RATIO: return "not met (speed)"
    if accuracy_difference >= 0: return "met"
    if paired["seeds"] > 1 and paired["mean"] + 2 * paired["standard_error"] >= 0:
        return "speed met; accuracy lower on average but within 2 standard errors of equal over the paired seeds"
    return "not met (accuracy)"


def markdown_table(rows: list[dict], columns: dict) -> str:
    "A Markdown table of `rows`; `columns` maps a header to a function of the row."
    lines = ["| " + " | ".join(columns) + " |", "|---" + "|---:" * (len(columns) - 1) + "|"]
    lines += ["| " + " | ".join(str(format_cell(row)) for format_cell in columns.values()) + " |" for row in rows]
    return "\n".join(lines)


SUMMARY_COLUMNS = {
    "arm": lambda row: row["arm"],
    "max length": lambda row: row["max_length"],
    "train s": lambda row: f"{row['seconds']:.1f}",
    "samples/s": lambda row: f"{row['samples_per_second']:.1f}",
    "real tokens/s": lambda row: f"{row['real_tokens_per_second']:.0f}",
    "computed positions/s": lambda row: f"{row['positions_per_second']:.0f}",
    "padding share": lambda row: f"{100 * row['padding_share']:.1f}%",
    "× hf_default": lambda row: f"{row['ratio']:.2f}",
    "test accuracy": lambda row: f"{row['accuracy']:.4f}",
    "test macro-F1": lambda row: f"{row['macro_f1']:.4f}",
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder with data/ and tokenizer/ (or model/ holding the tokenizer); "
                                                 "read only (default: run the data and tokenizer stages into a temporary one)")
    parser.add_argument("--config", type=Path, default=ROOT/"configs"/"default.yaml", help="model and training settings")
    parser.add_argument("--epochs", type=float, default=1.0, help="training epochs of every arm")
    parser.add_argument("--seed", type=int, help="seed of every arm (default: the config's); accuracy differs by seed")
    parser.add_argument("--seeds", type=int, nargs="+", help="one round per seed (paired comparison of accuracy over seeds)")
    parser.add_argument("--train-limit", type=int, help="train on a stratified subset of about N texts (quick checks)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:4]),
                        help="arms, in round 1's order (default: all but ours_sorted)")
    parser.add_argument("--rounds", type=int, help="train every arm this many times, order reversed each round "
                                                  "(default: 1, or one per --seeds entry)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps per arm on a throwaway model first")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a config key, as in `bigmodel-nb run --set` (repeatable), e.g. train.label_mix=0")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if "hf_default" not in args.arms: parser.error("--arms must include hf_default, the baseline of every ratio")
    if args.seed is not None and args.seeds: parser.error("give --seed or --seeds, not both")
    if args.rounds is None: args.rounds = len(args.seeds) if args.seeds else 1
    if args.seeds and args.rounds % len(args.seeds): parser.error("--rounds must be a multiple of the number of --seeds")

    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator")  # CPU only
    if args.threads: torch.set_num_threads(args.threads)
    overrides = args.overrides + [f"train.epochs={args.epochs}"] + ([f"seed={args.seed}"] if args.seed is not None else [])
    config = load_config(args.config, overrides)
    load_at_start = os.getloadavg()
    run = prepare_run(args.run.resolve() if args.run else None, config)
    tokenizer, tokenizer_folder = find_tokenizer(run)
    splits, label_names = load_splits(run), load_card(run)["label_names"]
    train, test = splits["train"], splits["test"]
    if args.train_limit: train = stratified_sample(train, args.train_limit, config.seed)[0]
    setups = {name: arm_setup(name, tokenizer, train, config) for name in args.arms}
    print(f"run {run} (tokenizer {tokenizer_folder}, {len(tokenizer)} tokens); {len(train)} training texts, "
          f"{len(test)} test texts; {args.epochs:g} epoch(s), batch {config.train.batch_size}, learning rate "
          f"{config.train.learning_rate:g}, seed(s) {', '.join(map(str, args.seeds or [config.seed]))}, label mix "
          f"{config.train.label_mix:g}; model {config.model.num_layers} layers × "
          f"{config.model.hidden_size}; torch threads {torch.get_num_threads()} (inter-op {torch.get_num_interop_threads()}); "
          f"load average {load_at_start[0]:.2f} {load_at_start[1]:.2f} {load_at_start[2]:.2f} on {os.cpu_count()} CPUs",
          flush=True)

    work = Path(tempfile.mkdtemp(prefix="bench-train-out-"))
    if args.warmup_steps:
        for name in args.arms:
            print(f"warm-up: {name}, {args.warmup_steps} untimed steps", flush=True)
            train_arm(setups[name], config, tokenizer, label_names, work/f"warmup-{name}", max_steps=args.warmup_steps)

    runs, seeds = {name: [] for name in args.arms}, args.seeds or [config.seed]
    for number, order in enumerate(round_orders(args.arms, args.rounds), start=1):
        seed = seeds[(number - 1) % len(seeds)]
        round_config = config.model_copy(update={"seed": seed})
        print(f"round {number} (seed {seed}): {', '.join(order)}", flush=True)
        for name in order:
            setup, load = setups[name], os.getloadavg()[0]
            model, seconds, counter, steps, options = train_arm(setup, round_config, tokenizer, label_names, work/name)
            scores = test_scores(model, tokenizer, test, setup.max_length, config.runtime.batch_size)
            runs[name].append({"round": number, "seed": seed, "seconds": seconds, "samples": counter.samples, "steps": steps,
                               "positions": counter.positions, "real_tokens": counter.real_tokens, "trainer": options,
                               "load_at_start": load,
                               **scores})
            print(f"  {name}: {seconds:.1f} s, {counter.samples / seconds:.1f} samples/s, test accuracy "
                  f"{scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f} (load average at its start {load:.2f})",
                  flush=True)

    shutil.rmtree(work, ignore_errors=True)
    summary = [summarize(name, runs[name]) | {"max_length": setups[name].max_length} for name in args.arms]
    baseline = next(row for row in summary if row["arm"] == "hf_default")
    for row in summary: row["ratio"] = row["samples_per_second"] / baseline["samples_per_second"]
    per_round = {name: [run["samples"] / run["seconds"] / (runs["hf_default"][i]["samples"] / runs["hf_default"][i]["seconds"])
                        for i, run in enumerate(runs[name])] for name in args.arms if name != "hf_default"}
    load_at_end = os.getloadavg()
    print(f"\n{markdown_table(summary, SUMMARY_COLUMNS)}\n")
    paired = {name: paired_differences(runs[name], runs["hf_default"]) for name in args.arms if name != "hf_default"}
    for name, ratios in per_round.items():
        row, difference = next(row for row in summary if row["arm"] == name), paired[name]
        print(f"{name} / hf_default: {row['ratio']:.2f}× samples/s (per round: {', '.join(f'{r:.2f}' for r in ratios)}); "
              f"test accuracy {100 * (row['accuracy'] - baseline['accuracy']):+.2f} points, macro-F1 "
              f"{100 * (row['macro_f1'] - baseline['macro_f1']):+.2f} points; goal ≥ {GOAL_RATIO}× at equal or better "
              f"accuracy: {verdict(row['ratio'], row['accuracy'] - baseline['accuracy'], difference)}")
        if difference["seeds"] > 1:
            print(f"  paired by seed over {difference['seeds']} seeds: accuracy {100 * difference['mean']:+.2f} ± "
                  f"{100 * difference['standard_error']:.2f} points (mean ± standard error; per seed: "
                  f"{', '.join(f'{100 * d:+.2f}' for d in difference['per_seed'])}); hf_default "
                  f"{baseline['accuracy']:.4f} ± {baseline['accuracy_sd']:.4f}, {name} {row['accuracy']:.4f} ± "
                  f"{row['accuracy_sd']:.4f} (mean ± standard deviation over rounds)")
    print(f"load average at the end {load_at_end[0]:.2f} {load_at_end[1]:.2f} {load_at_end[2]:.2f}")

    import transformers, tokenizers
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "run": str(run), "tokenizer": str(tokenizer_folder),
               "vocab_size": len(tokenizer), "config": str(args.config), "epochs": args.epochs,
               "train_texts": len(train), "test_texts": len(test), "train_limit": args.train_limit,
               "batch_size": config.train.batch_size, "learning_rate": config.train.learning_rate, "seed": config.seed,
               "rounds": args.rounds, "orders": round_orders(args.arms, args.rounds), "warmup_steps": args.warmup_steps,
               "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
               "cpu_count": os.cpu_count(), "load_average_at_start": load_at_start, "load_average_at_end": load_at_end,
               "torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
               "python": sys.version.split()[0], "overrides": args.overrides,
               "trainers": {name: runs[name][0]["trainer"] for name in args.arms}, "summary": summary, "runs": runs,
               "per_round_ratio": per_round, "seeds": seeds, "paired_accuracy_difference": paired}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
