"""Weight averaging ("model soup") of finished runs' fine-tuned models: the uniform average of their weights, scored on the
first run's valid and test splits. The runs must share the architecture and the split (the same data and seed 42 split,
different training seeds, say).

    .venv/bin/python bench/model_soup.py RUN_DIR RUN_DIR [RUN_DIR ...]
"""
import sys
import numpy as np, pandas as pd, torch
from transformers import AutoModelForSequenceClassification
from bigmodel_nb.config import load_config
import bigmodel_nb.heads  # registers the mean-pooling and averaged classifiers with the Auto classes
from bigmodel_nb.inference import predict_logits
from bigmodel_nb.modeling import load_tokenizer
from bigmodel_nb.rundir import RunDir

def main(runs: list[str]) -> None:
    if len(runs) < 2: sys.exit(__doc__)
    first = RunDir(runs[0])
    max_length = load_config(first.config).model.max_length
    tokenizer = load_tokenizer(first.model)
    states = [AutoModelForSequenceClassification.from_pretrained(RunDir(run).model).state_dict() for run in runs]
    soup = AutoModelForSequenceClassification.from_pretrained(first.model).eval()
    soup.load_state_dict({key: sum(state[key].float() for state in states) / len(states) if value.is_floating_point() else value
                          for key, value in states[0].items()})
    for split in ("valid", "test"):
        frame = pd.read_parquet(first.split(split))
        logits = predict_logits(soup, tokenizer, frame["text"], max_length, 64)
        print(f"{split}: soup of {len(runs)} accuracy {np.mean(logits.argmax(1) == frame['label'].to_numpy()):.4f}", flush=True)

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]): print(__doc__); sys.exit(0)
    main(sys.argv[1:])
