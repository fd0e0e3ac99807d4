"""Portable models: every model folder a run saves opens with plain transformers in an interpreter where bigmodel_nb
cannot be imported at all: the default BERT as it is, the mean-pooling and averaged classifiers with
`trust_remote_code=True` (their folder carries heads.py), and each carries a README.md model card."""
import json, os, subprocess, sys

import numpy as np
import torch

from bigmodel_nb.heads import AveragedClassifier, MeanPoolingBertConfig, MeanPoolingBertForSequenceClassification
from bigmodel_nb.modeling import write_model_card

# loads each folder with bigmodel_nb blocked, and prints the logits of a fixed batch as JSON
LOADER = r"""
import json, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name == "bigmodel_nb" or name.startswith("bigmodel_nb."): raise ImportError("bigmodel_nb is blocked here")
sys.meta_path.insert(0, Blocked())
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
out = {}
for folder, remote in json.loads(sys.argv[1]):
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["这本书很好看", "物流太慢了，差评"], padding=True, return_tensors="pt")
    with torch.no_grad(): out[folder] = model(**batch).logits.tolist()
try:
    import bigmodel_nb
    out["imported"] = True
except ImportError: out["imported"] = False
print(json.dumps(out))
"""


def logits_here(folder) -> list:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = AutoTokenizer.from_pretrained(folder)(["这本书很好看", "物流太慢了，差评"], padding=True, return_tensors="pt")
    with torch.no_grad(): return model(**batch).logits.tolist()


def test_saved_models_open_without_bigmodel_nb(tiny_run, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    default, tokenizer_folder = tiny_run/"model", tiny_run/"tokenizer"
    trained = AutoConfig.from_pretrained(default)
    labels = {"num_labels": trained.num_labels, "id2label": trained.id2label, "label2id": trained.label2id}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, **labels)
    torch.manual_seed(0)
    mean = MeanPoolingBertForSequenceClassification(MeanPoolingBertConfig(**shape)).eval()
    averaged = AveragedClassifier.of([AutoModelForSequenceClassification.from_pretrained(default), mean], seeds=[42, 43])
    folders = {"mean": tmp_path/"mean", "averaged": tmp_path/"averaged"}
    for name, model in (("mean", mean), ("averaged", averaged)):
        model.save_pretrained(folders[name]); tokenizer.save_pretrained(folders[name])
        write_model_card(folders[name], f"a {name} classifier", None, {"valid macro-F1": 0.5})
        assert (folders[name]/"heads.py").exists() and "auto_map" in json.loads((folders[name]/"config.json").read_text())
    assert "auto_map" not in json.loads((default/"config.json").read_text())  # the default BERT needs no code of ours
    assert (default/"README.md").exists() and "license:" in (default/"README.md").read_text()
    assert "trust_remote_code=True" in (folders["mean"]/"README.md").read_text()

    wanted = [[str(default), False], [str(folders["mean"]), True], [str(folders["averaged"]), True]]
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path/"modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOADER, json.dumps(wanted)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded.pop("imported") is False
    for folder, _ in wanted:
        np.testing.assert_allclose(loaded[folder], logits_here(folder), atol=1e-5)
