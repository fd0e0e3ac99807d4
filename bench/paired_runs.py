"""Paired bootstrap of test accuracy between finished runs on the same split, and of each run vs TF-IDF + LR refitted as the
evaluate stage does (its per-text predictions are not saved).

    .venv/bin/python bench/paired_runs.py RUN_DIR [RUN_DIR ...]
"""
import sys, numpy as np, pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
runs = sys.argv[1:]
preds = {r: pd.read_parquet(f"{r}/data/test_predictions.parquet") for r in runs}
first = preds[runs[0]]
for r in runs[1:]: assert (preds[r]["text"].values == first["text"].values).all(), r
right = {r: (p["predicted"] == p["label"]).to_numpy() for r, p in preds.items()}
train = pd.read_parquet(f"{runs[0]}/data/train.parquet")
vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True)
classifier = LogisticRegression(max_iter=2000, C=4.0).fit(vectorizer.fit_transform(train["text"]), train["label"])
right["tfidf"] = classifier.predict(vectorizer.transform(first["text"])) == first["label"].to_numpy()
rng = np.random.default_rng(0); n = len(first); draws = rng.integers(0, n, size=(2000, n))
def compare(a, b):
    diff = right[a].astype(float) - right[b].astype(float)
    boot = diff[draws].mean(axis=1) * 100
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(f"{a} vs {b}: {right[a].mean():.4f} vs {right[b].mean():.4f}, diff {diff.mean()*100:+.2f} pts, 95% CI {lo:+.2f} … {hi:+.2f}; "
          f"right only in first {int(((right[a]) & ~right[b]).sum())}, only in second {int((~right[a] & right[b]).sum())}")
names = list(right)
for i, a in enumerate(names):
    for b in names[i+1:]: compare(a, b)
