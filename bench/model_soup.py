"""Weight averaging ("model soup") of finished runs' fine-tuned models: the uniform average of their weights, scored on the
first run's valid and test splits. The runs must share the architecture and the split (the same data and seed 42 split,
different training seeds, say).

    .venv/bin/python bench/model_soup.py RUN_DIR RUN_DIR [RUN_DIR ...]
"""
import sys
import numpy as np, pandas as pd, torch
from transformers import AutoModelForSequenceClassification
from bigmodel_nb.config import load_config
from bigmodel_nb.evaluate import predict_logits
from bigmodel_nb.tokenizer import load_tokenizer

def main(runs: list[str]) -> None:
    if len(runs) < 2: sys.exit(__doc__)
    max_length = load_config(f"{runs[0]}/config.yaml").model.max_length
    tokenizer = load_tokenizer(f"{runs[0]}/model")
    states = [AutoModelForSequenceClassification.from_pretrained(f"{run}/model").state_dict() for run in runs]
    soup = AutoModelForSequenceClassification.from_pretrained(f"{runs[0]}/model").eval()
    soup.load_state_dict({key: sum(state[key].float() for state in states) / len(states) if value.is_floating_point() else value
                          for key, value in states[0].items()})
    for split in ("valid", "test"):
        frame = pd.read_parquet(f"{runs[0]}/data/{split}.parquet")
        logits = predict_logits(soup, tokenizer, frame["text"], max_length, 64)
        print(f"{split}: soup of {len(runs)} accuracy {np.mean(logits.argmax(1) == frame['label'].to_numpy()):.4f}", flush=True)

if __name__ == "__main__": main(sys.argv[1:])
