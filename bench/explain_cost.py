"""What SHAP explanations cost: the explain stage on one finished run, once per variant, in one process, side by side.

    .venv/bin/python bench/explain_cost.py runs/default-20261204-165343                    # fp32 and the served variant
    .venv/bin/python bench/explain_cost.py RUN --variants fp32 onnx_int8 -p explain.max_evals=60

Each arm copies the run's `data/`, `model/`, `compressed/` and `config.yaml` into OUT/<variant>/ (the run itself is not
touched) and runs the explain stage there with the run's config and `explain.variant=<variant>` (plus any -p overrides),
through `get_stage("explain").run`, what the pipeline's workflow notebook calls. Printed per arm: texts explained, model
calls per text (mean, max; the budget is `explain.max_evals`), seconds per text (mean, max; shap's first-call warm-up is
reported apart), the stage's seconds; then each arm's seconds per text against the first arm's.
"""
import argparse, json, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished run folder (data, model, compressed)")
    parser.add_argument("--variants", nargs="+", default=["fp32", "served"], help="arms, in run order; the first is the reference")
    parser.add_argument("-p", "--override", action="append", default=[], help="more key=value config overrides (every arm)")
    parser.add_argument("--out", default=None, help="where the arms' copies go (default: a temporary folder, removed)")
    return parser.parse_args(argv)

def arm(run_dir: Path, out: Path, variant: str, overrides: list[str]) -> dict:
    "One arm: a copy of the run, the explain stage with `explain.variant=variant`; its metrics and wall seconds."
    from bigmodel_nb.config import load_config
    from bigmodel_nb.stage import get_stage
    target = out/variant
    for part in ("data", "model", "compressed", "tokenizer"):
        if (run_dir/part).exists(): shutil.copytree(run_dir/part, target/part)
    shutil.copy(run_dir/"config.yaml", target/"config.yaml")
    config = load_config(target/"config.yaml", [f"explain.variant={variant}", *overrides])
    started = time.perf_counter()
    metrics = get_stage("explain").run(config, target, force=True).metrics["explain"]
    return {**metrics, "wall_seconds": time.perf_counter() - started}

def main(argv=None):
    args = parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="explain-cost-"))
    try:
        results = {variant: arm(run_dir, out, variant, args.override) for variant in args.variants}
    finally:
        if not args.out: shutil.rmtree(out, ignore_errors=True)
    print(f"\nrun {run_dir.name}; overrides: {' '.join(args.override) or 'none'}")
    print(f"{'arm':<10} {'variant':<14} {'texts':>5} {'evals/text':>10} {'max':>4} {'s/text':>7} {'max':>6} {'warm-up s':>9} {'stage s':>8}")
    for name, m in results.items():
        print(f"{name:<10} {m['variant']:<14} {m['n_texts']:>5} {m['evals_per_text']:>10.1f} {m['evals_max']:>4} "
              f"{m['seconds_per_text']:>7.3f} {m['seconds_per_text_max']:>6.2f} {m['warmup_seconds']:>9.1f} {m['wall_seconds']:>8.1f}")
    first = results[args.variants[0]]
    for name, m in list(results.items())[1:]:
        print(f"{name} vs {args.variants[0]}: seconds per text {m['seconds_per_text'] / first['seconds_per_text']:.2f}x")
    print(json.dumps({name: {key: m[key] for key in ("variant", "n_texts", "evals_per_text", "seconds_per_text", "wall_seconds")}
                      for name, m in results.items()}))

if __name__ == "__main__":
    main()
