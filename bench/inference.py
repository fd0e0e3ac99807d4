"""Inference benchmark: sequences/s of every compressed variant against fp32 eager PyTorch, at batch 1 and 32 and sequence
length 64, all in one process and interleaved round-robin; a fp32 GEMM ceiling measured in the same run; and how PyTorch
and ONNX Runtime latencies degrade while a second process loads the CPU.

    .venv/bin/python bench/inference.py --run RUN_DIR          # a run folder with a trained model/
    .venv/bin/python bench/inference.py                        # builds a small model first (about a minute)

The variants are those of RUN_DIR/compressed/ (built by `run_compress` when missing, or with --rebuild).
"""
import argparse, json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import torch

from bigmodel_nb.compress import (COMPRESSED_DIR, LATENCY_LENGTH, VARIANT_FILE, fixed_length_batch, load_variant,
                                  measure_latency, quiet_progress_bars, run_compress, torch_threads)
from bigmodel_nb.config import load_config
from bigmodel_nb.core import read_json
from bigmodel_nb.data import load_splits
from bigmodel_nb.train import MODEL_DIR

BATCH_SIZES = (1, 32)


def build_small_run(run_dir: Path) -> None:
    "Train a small model (the quick profile, fewer texts) into `run_dir`."
    from bigmodel_nb.data import run_data
    from bigmodel_nb.tokenizer import run_tokenizer
    from bigmodel_nb.train import run_train
    from bigmodel_nb.config import save_config
    config = load_config(ROOT/"configs"/"quick.yaml", ["data.sample=1000", "data.clean.near_duplicates.enabled=false"])
    save_config(config, run_dir/"config.yaml")
    for stage in (run_data, run_tokenizer, run_train): stage(config, run_dir)


def ensure_variants(run_dir: Path, threads: int, rebuild: bool) -> dict:
    "The run's compress metrics section, building the variants first when they are missing."
    section = (read_json(run_dir/"metrics.json", {}) or {}).get("compress")
    if rebuild or not section or not section.get("variants") or not (run_dir/COMPRESSED_DIR/"selected.json").exists():
        config_path = run_dir/"config.yaml"
        config = load_config(config_path if config_path.exists() else ROOT/"configs"/"quick.yaml",
                             [f"compress.threads={threads}"])
        print(f"building variants in {run_dir/COMPRESSED_DIR} (compress.threads={threads})", flush=True)
        run_compress(config, run_dir)
        section = read_json(run_dir/"metrics.json")["compress"]
    return section


def flops_per_sequence(model_dir: Path, length: int = LATENCY_LENGTH) -> tuple[int, int]:
    "Matmul FLOPs of one sequence of `length` tokens: counted by torch's FlopCounterMode, and from the config's shapes."
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForSequenceClassification
    with quiet_progress_bars():  # eager attention, so the attention matmuls are visible to the counter
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    ids = torch.full((1, length), 5)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    c = model.config
    hidden, inner, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    per_layer = 2 * length * hidden * hidden * 4 + 2 * length * hidden * inner * 2 + 2 * length * length * hidden * 2
    return int(counter.get_total_flops()), int(layers * per_layer + 2 * hidden * hidden + 2 * hidden * c.num_labels)


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
        return {name: load_variant(run_dir/variant["path"], threads=threads).runner for name, variant in section["variants"].items()}


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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="run folder with a trained model/ (default: build a small one)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure (torch and ORT alike)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant and batch size (median kept)")
    parser.add_argument("--load-repeats", type=int, default=15, help="timed calls per case in the CPU-load test")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the variants even if the run has them")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    if args.run is None:
        args.run = Path(tempfile.mkdtemp(prefix="bench-inference-"))
        print(f"no --run: training a small model in {args.run}", flush=True)
        build_small_run(args.run)
    run_dir = args.run.resolve()
    if not (run_dir/MODEL_DIR/"config.json").exists(): sys.exit(f"{run_dir/MODEL_DIR} holds no trained model")
    section = ensure_variants(run_dir, args.threads[0], args.rebuild)
    selected = read_json(run_dir/COMPRESSED_DIR/"selected.json")["name"]
    test_texts = load_splits(run_dir)["test"]["text"].tolist()
    tokenizer = load_variant(run_dir/MODEL_DIR).tokenizer
    batches = {size: fixed_length_batch(tokenizer, test_texts, size) for size in BATCH_SIZES}
    counted, analytic = flops_per_sequence(run_dir/MODEL_DIR)
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "run": str(run_dir), "selected": selected, "length": LATENCY_LENGTH,
               "repeats": args.repeats, "load_average_at_start": os.getloadavg(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "flops_per_sequence": counted, "flops_per_sequence_analytic": analytic,
               "by_threads": {}, "under_load": {}}
    print(f"run {run_dir}; selected variant: {selected}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"matmul FLOPs per sequence at {LATENCY_LENGTH} tokens: {counted / 1e6:.1f} M (FlopCounterMode), "
          f"{analytic / 1e6:.1f} M (from the shapes)")

    for threads in args.threads:
        runners = load_runners(run_dir, section, threads)
        with torch_threads(threads):
            latency = measure_latency(runners, batches, args.repeats, warmup=3)
        ceiling = gemm_ceiling(threads)
        rows = []
        for name, times in latency.items():
            row = {"variant": name, "kind": section["variants"][name]["kind"]}
            for size in BATCH_SIZES:
                row[f"seq/s b={size}"] = f"{size * 1000 / times[size]:.1f}"
                row[f"× fp32 b={size}"] = f"{latency['fp32'][size] / times[size]:.2f}"
            achieved = counted * 32 * 1000 / times[32] / 1e9
            row["GFLOP/s b=32"] = f"{achieved:.1f}"
            row["% ceiling"] = f"{100 * achieved / ceiling['median']:.0f}%"
            rows.append(row)
        best = max(latency, key=lambda name: latency["fp32"][32] / latency[name][32])
        selected_gflops = counted * 32 * 1000 / latency[selected][32] / 1e9
        results["by_threads"][threads] = {"latency_ms": latency, "gemm_gflops": ceiling, "selected_gflops_b32": selected_gflops,
                                          "selected_fraction_of_ceiling": selected_gflops / ceiling["median"],
                                          "best_speedup_b32": {best: latency["fp32"][32] / latency[best][32]},
                                          "selected_speedup_b32": latency["fp32"][32] / latency[selected][32]}
        print(f"\n== {threads} thread(s): torch.set_num_threads({threads}), ORT intra_op_num_threads={threads}, "
              f"inter_op 1; {args.repeats} interleaved calls, median ==")
        print(table(rows, list(rows[0])))
        print(f"GEMM ceiling (fp32 torch.mm {ceiling['size']}²): {ceiling['median']:.1f} GFLOP/s median, {ceiling['best']:.1f} best")
        print(f"selected {selected}: {latency['fp32'][32] / latency[selected][32]:.2f}× fp32 at b=32 (goal ≥ 2.5×: "
              f"{'met' if latency['fp32'][32] / latency[selected][32] >= 2.5 else 'not met'}); best variant {best} "
              f"{latency['fp32'][32] / latency[best][32]:.2f}×; selected reaches {selected_gflops:.1f} fp32-equivalent GFLOP/s = "
              f"{100 * selected_gflops / ceiling['median']:.0f}% of the ceiling (goal ≥ 60%: "
              f"{'met' if selected_gflops >= 0.6 * ceiling['median'] else 'not met'})")

    print("\n== latency under load: a second process spins one core during the 'loaded' measurement ==")
    load_rows = []
    for threads in (1, 2):
        runners = load_runners(run_dir, section, threads)
        runners = {name: runners[name] for name in dict.fromkeys(["fp32", "onnx_fp32", selected]) if name in runners}
        with torch_threads(threads):
            quiet = measure_latency(runners, batches, args.load_repeats, warmup=2)
            busy = busy_process(seconds=120)
            try:
                time.sleep(0.5)  # let it start spinning
                loaded = measure_latency(runners, batches, args.load_repeats, warmup=2)
            finally: stop(busy)
        results["under_load"][threads] = {"quiet_ms": quiet, "loaded_ms": loaded}
        for name in runners:
            row = {"threads": threads, "variant": name}
            for size in BATCH_SIZES:
                row[f"quiet ms b={size}"] = f"{quiet[name][size]:.2f}"
                row[f"loaded ms b={size}"] = f"{loaded[name][size]:.2f}"
                row[f"slow-down b={size}"] = f"{loaded[name][size] / quiet[name][size]:.2f}×"
            load_rows.append(row)
    print(table(load_rows, list(load_rows[0])))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
