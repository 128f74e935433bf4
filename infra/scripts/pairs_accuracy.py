"""Verification accuracy of `osprey embed` output on a pairs list, LFW style.

Usage: pairs_accuracy.py EMBED.parquet PAIRS.csv [--folds 10]
PAIRS.csv has `file_x,file_y,Decision` (Yes/No) rows naming images by file
name (deepface's tests/unit/dataset/master.csv). Each image's largest-face
embedding is taken from the Parquet file; pairs with an image without a face
count as wrong. Accuracy is k-fold: the cosine threshold is chosen on k-1
folds and applied to the held-out one (the LFW protocol's procedure).
Test-only helper; Osprey's own `osprey eval` is the product feature.
"""
import argparse, csv, os, sys

import duckdb
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("parquet")
    ap.add_argument("pairs")
    ap.add_argument("--folds", type=int, default=10)
    a = ap.parse_args()
    rows = duckdb.sql(f"SELECT media_uri, embedding FROM read_parquet('{a.parquet}') WHERE embedding IS NOT NULL").fetchall()
    emb = {os.path.basename(u): np.asarray(e, dtype=np.float64) for u, e in rows}
    pairs = []
    with open(a.pairs, newline="") as f:
        for r in csv.DictReader(f):
            x, y, same = r["file_x"].strip(), r["file_y"].strip(), r["Decision"].strip() == "Yes"
            s = float(emb[x] @ emb[y]) if x in emb and y in emb else -np.inf
            pairs.append((s, same))
    scores = np.array([p[0] for p in pairs])
    labels = np.array([p[1] for p in pairs])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    folds = np.array_split(order, a.folds)
    accs = []
    for i, test in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != i])
        cands = np.unique(scores[train][np.isfinite(scores[train])])
        best = max(cands, key=lambda t: ((scores[train] >= t) == labels[train]).mean())
        accs.append(((scores[test] >= best) == labels[test]).mean())
    missing = int((~np.isfinite(scores)).sum())
    print(f"pairs {len(pairs)} (same {labels.sum()}, different {(~labels).sum()}), without a face {missing}; "
          f"{a.folds}-fold accuracy {np.mean(accs):.4f} ± {np.std(accs):.4f}")


if __name__ == "__main__":
    sys.exit(main())
