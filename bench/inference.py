"""Inference benchmark: sequences/s of every compressed variant against fp32 eager PyTorch, at batch 1 and 32 and sequence
length 64, all in one process and interleaved round-robin; a fp32 GEMM ceiling measured in the same run; and how PyTorch
and ONNX Runtime latencies degrade while a second process loads the CPU.

    .venv/bin/python bench/inference.py --run RUN_DIR          # a run folder with a trained model/
    .venv/bin/python bench/inference.py                        # builds a small model first (about a minute)
    .venv/bin/python bench/inference.py --run RUN_DIR --rebuild --set compress.distill=true   # with the distilled students

The variants are those of RUN_DIR/compressed/ (built by the compress stage, `get_stage("compress")`, when missing, or with
--rebuild, from the run's config.yaml plus the --set overrides).

GFLOP/s: every variant's matmul FLOPs per sequence are counted on its own architecture (FlopCounterMode, checked against
the count from the shapes). "fp32-equivalent" GFLOP/s is fp32's FLOPs per sequence × the variant's sequences/s, the work of
the model it replaces; "own" GFLOP/s uses the variant's own FLOPs (fewer for a distilled student).
"""
import argparse, json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from bigmodel_nb.compress import (LATENCY_LENGTH, counted_matmul_flops, fixed_length_batch, matmul_flops_per_sequence,
                                  measure_latency, torch_threads)
from bigmodel_nb.config import load_config
from bigmodel_nb.core import read_json
from bigmodel_nb.inference import load_variant
from bigmodel_nb.rundir import RunDir, load_splits, read_metrics
from bigmodel_nb.stage import get_stage

BATCH_SIZES = (1, 32)


def build_small_run(run_dir: Path) -> None:
    "Train a small model (the quick profile, fewer texts) into `run_dir`."
    from bigmodel_nb.config import save_config
    config = load_config(ROOT/"configs"/"quick.yaml", ["data.sample=1000", "data.clean.near_duplicates.enabled=false"])
    save_config(config, RunDir(run_dir).config)
    for stage in ("data", "tokenizer", "train"): get_stage(stage).run(config, run_dir)


def ensure_variants(run_dir: Path, threads: int, rebuild: bool, overrides: list[str]) -> dict:
    "The run's compress metrics section, building the variants first when they are missing (or `rebuild`)."
    run = RunDir(run_dir)
    section = read_metrics(run).get("compress")
    if rebuild or not section or not section.get("variants") or not run.selected.exists():
        overrides = [f"compress.threads={threads}", *overrides]
        config = load_config(run.config if run.config.exists() else ROOT/"configs"/"quick.yaml", overrides)
        print(f"building variants in {run.compressed} ({', '.join(overrides)})", flush=True)
        started = time.time()
        section = get_stage("compress").run(config, run, force=True).metrics["compress"]  # also writes metrics.json
        print(f"run_compress took {time.time() - started:.0f} s", flush=True)
    elif overrides: sys.exit("--set only applies when the variants are built: add --rebuild")
    return section


def variant_flops(run_dir: Path, section: dict, length: int = LATENCY_LENGTH) -> dict:
    "Matmul FLOPs of one `length`-token sequence for each variant's architecture: counted by torch, and from the shapes."
    from transformers import AutoConfig
    flops = {}
    for name, variant in section["variants"].items():
        model_config = AutoConfig.from_pretrained(RunDir(run_dir).resolve(variant["path"]))
        counted, analytic = counted_matmul_flops(model_config, length), matmul_flops_per_sequence(model_config, length)
        if counted != analytic: print(f"warning: {name}: FlopCounterMode counts {counted:,} FLOPs, the shapes give {analytic:,}")
        flops[name] = {"counted": counted, "analytic": analytic, "layers": model_config.num_hidden_layers}
    return flops


def gemm_ceiling(threads: int, size: int = 2048, repeats: int = 7) -> dict:
    "fp32 GFLOP/s of torch.mm on two size×size matrices with `threads` threads (median and best of `repeats`)."
    a, b = torch.randn(size, size), torch.randn(size, size)
    rates = []
    with torch_threads(threads):
        torch.mm(a, b)
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            rates.append(2 * size ** 3 / (time.perf_counter() - started) / 1e9)
    return {"median": float(np.median(rates)), "best": float(max(rates)), "size": size}


def load_runners(run_dir: Path, section: dict, threads: int) -> dict:
    "A runner per variant (ONNX Runtime sessions get `threads` intra-op threads)."
    with torch_threads(threads):
        return {name: load_variant(RunDir(run_dir).resolve(variant["path"]), threads=threads).runner
                for name, variant in section["variants"].items()}


def busy_process(seconds: float) -> subprocess.Popen:
    "A second process that spins one core for at most `seconds` (stopped earlier by its PID)."
    loop = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", loop])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None: os.kill(process.pid, signal.SIGTERM)
    process.wait()


def table(rows: list[dict], columns: list[str]) -> str:
    "A plain-text table."
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    line = lambda values: "  ".join(value.rjust(width) for value, width in zip(values, widths))
    return "\n".join([line(columns), line(["-" * width for width in widths])] + [line(row) for row in cells])


def accuracy_rows(section: dict, flops: dict) -> list[dict]:
    "What the stage recorded for each variant: accuracy against fp32, matmul work, how long distillation took."
    rows = []
    for name, variant in section["variants"].items():
        rows.append({"variant": name, "layers": flops[name]["layers"], "MFLOP/seq": f"{flops[name]['counted'] / 1e6:.1f}",
                     "accuracy": f"{variant['accuracy']:.4f}", "Δ points": f"{-variant['accuracy_drop_points']:+.2f}",
                     "agreement": f"{100 * variant['agreement_with_fp32']:.2f}%", "size MB": f"{variant['size_bytes'] / 1e6:.2f}",
                     "stage b=32 ms": f"{variant['latency_ms_b32']:.1f}",
                     "distill s": variant.get("distill_seconds", "")})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder with a trained model/ (default: build a small one)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure (torch and ORT alike)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant and batch size (median kept)")
    parser.add_argument("--load-repeats", type=int, default=15, help="timed calls per case in the CPU-load test (0: skip it)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the variants even if the run has them")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for the rebuild, e.g. compress.distill=true (repeatable; needs --rebuild)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    if args.run is None:
        args.run = Path(tempfile.mkdtemp(prefix="bench-inference-"))
        print(f"no --run: training a small model in {args.run}", flush=True)
        build_small_run(args.run)
    run_dir = args.run.resolve()
    run = RunDir(run_dir)
    if not (run.model/"config.json").exists(): sys.exit(f"{run.model} holds no trained model")
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "run": str(run_dir), "load_average_at_start": os.getloadavg(),
               "cpu_count": os.cpu_count(), "torch": torch.__version__, "overrides": args.overrides}
    section = ensure_variants(run_dir, args.threads[0], args.rebuild, args.overrides)
    selected = read_json(run.selected)["name"]
    test_texts = load_splits(run_dir)["test"]["text"].tolist()
    tokenizer = load_variant(run.variant("fp32")).tokenizer
    batches = {size: fixed_length_batch(tokenizer, test_texts, size) for size in BATCH_SIZES}
    flops = variant_flops(run_dir, section)
    baseline_flops = flops["fp32"]["counted"]
    results.update({"selected": selected, "selection_reason": section["reason"], "length": LATENCY_LENGTH, "repeats": args.repeats,
                    "load_average_at_measurement": os.getloadavg(), "flops_per_sequence": flops, "by_threads": {},
                    "under_load": {}, "stage_record": section["variants"]})
    print(f"\nrun {run_dir}; selected variant: {selected}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"stage's choice: {section['reason']}")
    stage_rows = accuracy_rows(section, flops)
    print(table(stage_rows, list(stage_rows[0])))
    print(f"matmul FLOPs per sequence at {LATENCY_LENGTH} tokens (FlopCounterMode = from the shapes): " + ", ".join(
        f"{name} {value['counted'] / 1e6:.1f} M" + ("" if value["counted"] == value["analytic"] else f" (shapes: {value['analytic'] / 1e6:.1f} M)")
        for name, value in flops.items()))

    for threads in args.threads:
        runners = load_runners(run_dir, section, threads)
        with torch_threads(threads):
            latency = measure_latency(runners, batches, args.repeats, warmup=3)
        ceiling = gemm_ceiling(threads)
        rows, rates = [], {}
        for name, times in latency.items():
            row = {"variant": name, "kind": section["variants"][name]["kind"]}
            for size in BATCH_SIZES:
                row[f"seq/s b={size}"] = f"{size * 1000 / times[size]:.1f}"
                row[f"× fp32 b={size}"] = f"{latency['fp32'][size] / times[size]:.2f}"
            sequences_per_s = 32 * 1000 / times[32]
            rates[name] = {"fp32_equivalent": baseline_flops * sequences_per_s / 1e9, "own": flops[name]["counted"] * sequences_per_s / 1e9}
            row["fp32-eq GFLOP/s b=32"] = f"{rates[name]['fp32_equivalent']:.1f}"
            row["% ceiling"] = f"{100 * rates[name]['fp32_equivalent'] / ceiling['median']:.0f}%"
            row["own GFLOP/s b=32"] = f"{rates[name]['own']:.1f}"
            row["own % ceiling"] = f"{100 * rates[name]['own'] / ceiling['median']:.0f}%"
            rows.append(row)
        best = max(latency, key=lambda name: latency["fp32"][32] / latency[name][32])
        speedup = latency["fp32"][32] / latency[selected][32]
        fraction, own_fraction = (rates[selected][kind] / ceiling["median"] for kind in ("fp32_equivalent", "own"))
        results["by_threads"][threads] = {"latency_ms": latency, "gemm_gflops": ceiling, "gflops_b32": rates,
                                          "selected_gflops_b32": rates[selected]["fp32_equivalent"],
                                          "selected_fraction_of_ceiling": fraction, "selected_own_fraction_of_ceiling": own_fraction,
                                          "best_speedup_b32": {best: latency["fp32"][32] / latency[best][32]},
                                          "selected_speedup_b32": speedup, "load_average_after": os.getloadavg()}
        print(f"\n== {threads} thread(s): torch.set_num_threads({threads}), ORT intra_op_num_threads={threads}, "
              f"inter_op 1; {args.repeats} interleaved calls, median; load average now {os.getloadavg()[0]:.2f} ==")
        print(table(rows, list(rows[0])))
        print(f"GEMM ceiling (fp32 torch.mm {ceiling['size']}²): {ceiling['median']:.1f} GFLOP/s median, {ceiling['best']:.1f} best")
        print(f"selected {selected}: {speedup:.2f}× fp32 at b=32 (goal ≥ 2.5×: {'met' if speedup >= 2.5 else 'not met'}); "
              f"best variant {best} {latency['fp32'][32] / latency[best][32]:.2f}×; selected reaches "
              f"{rates[selected]['fp32_equivalent']:.1f} fp32-equivalent GFLOP/s = {100 * fraction:.0f}% of the ceiling (goal ≥ 60%: "
              f"{'met' if fraction >= 0.6 else 'not met'}); by its own FLOPs {rates[selected]['own']:.1f} GFLOP/s = "
              f"{100 * own_fraction:.0f}% ({'met' if own_fraction >= 0.6 else 'not met'})")

    if args.json: write_results(args.json, results)
    if args.load_repeats > 0: results["under_load"] = load_test(run_dir, section, selected, batches, args.load_repeats)
    if args.json: write_results(args.json, results)
    return results


def write_results(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))


def load_test(run_dir: Path, section: dict, selected: str, batches: dict, repeats: int) -> dict:
    "Latency of fp32, onnx_fp32 and the selected variant, quiet and while a second process spins one core, at 1 and 2 threads."
    print("\n== latency under load: a second process spins one core during the 'loaded' measurement ==")
    load_rows, under_load = [], {}
    for threads in (1, 2):
        runners = load_runners(run_dir, section, threads)
        runners = {name: runners[name] for name in dict.fromkeys(["fp32", "onnx_fp32", selected]) if name in runners}
        with torch_threads(threads):
            quiet = measure_latency(runners, batches, repeats, warmup=2)
            busy = busy_process(seconds=120)
            try:
                time.sleep(0.5)  # let it start spinning
                loaded = measure_latency(runners, batches, repeats, warmup=2)
            finally: stop(busy)
        under_load[threads] = {"quiet_ms": quiet, "loaded_ms": loaded}
        for name in runners:
            row = {"threads": threads, "variant": name}
            for size in BATCH_SIZES:
                row[f"quiet ms b={size}"] = f"{quiet[name][size]:.2f}"
                row[f"loaded ms b={size}"] = f"{loaded[name][size]:.2f}"
                row[f"slow-down b={size}"] = f"{loaded[name][size] / quiet[name][size]:.2f}×"
            load_rows.append(row)
    print(table(load_rows, list(load_rows[0])))
    return under_load


if __name__ == "__main__":
    main()
