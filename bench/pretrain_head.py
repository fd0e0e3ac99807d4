"""Masked-LM training step: `BertForMaskedLM` (vocabulary logits at every position) vs `MaskedPositionsBert` (logits only at
the masked positions), same weights, same batches, interleaved in one process.

    .venv/bin/python bench/pretrain_head.py --run RUN_DIR [--batches 12] [--threads 1]

RUN_DIR is a run folder with `data/` and `tokenizer/` (any finished run). The model is the run config's size. Each timed
call is one forward + backward pass on a batch of 64 real train texts (dynamic padding, 15% masking, the masks drawn once
and shared by both models); the two models alternate, starting model swapped every batch; the median over batches is kept.
"""
import argparse, statistics, time
from pathlib import Path

import torch
from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

from bigmodel_nb.config import load_config
from bigmodel_nb.modeling import load_tokenizer
from bigmodel_nb.pretrain import build_masked_lm
from bigmodel_nb.rundir import RunDir, load_splits


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = RunDir(args.run)
    config = load_config(run.config)
    tokenizer = load_tokenizer(run.tokenizer)
    texts = load_splits(run)["train"]["text"].sample(args.batches * args.batch_size, random_state=0).tolist()
    ids = tokenizer(texts, truncation=True, max_length=config.model.max_length)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    torch.manual_seed(0)
    batches = [collator([{"input_ids": row} for row in ids[i:i + args.batch_size]]) for i in range(0, len(ids), args.batch_size)]
    ours = build_masked_lm(config, tokenizer)
    plain = BertForMaskedLM(ours.config)
    plain.load_state_dict(ours.state_dict())
    models = {"BertForMaskedLM (all positions)": plain, "MaskedPositionsBert (masked only)": ours}
    for model in models.values(): model.train()
    times = {name: [] for name in models}
    losses = {name: [] for name in models}
    for index, batch in enumerate([batches[0]] + batches):  # the first batch warms both up and is not counted
        order = list(models) if index % 2 == 0 else list(reversed(models))
        for name in order:
            model = models[name]
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            elapsed = time.perf_counter() - started
            if index: times[name].append(elapsed); losses[name].append(float(loss))
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    print(f"model: {config.model.num_layers} layers, hidden {config.model.hidden_size}, vocabulary {len(tokenizer)}; "
          f"{len(batches)} batches of {args.batch_size}, {tokens / len(batches) / args.batch_size:.1f} tokens per text; "
          f"{args.threads} thread(s)")
    baseline = statistics.median(times["BertForMaskedLM (all positions)"])
    for name in models:
        median = statistics.median(times[name])
        print(f"{name:36s} median {median * 1000:8.1f} ms/step  {args.batch_size / median:7.1f} texts/s  "
              f"x{baseline / median:.2f}  mean loss {statistics.mean(losses[name]):.4f}")


if __name__ == "__main__":
    main()
