"""Reference for `osprey bench search`: the same measurement with raw FAISS
(faiss-cpu from PyPI) on the same files, index, nprobe, k and threads.
Prints one JSON line with the same keys."""
import argparse
import json
import time

import faiss
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--gallery-file", required=True)
p.add_argument("--query-file", required=True)
p.add_argument("--index", default="Flat")
p.add_argument("--nprobe", type=int)
p.add_argument("--k", type=int, default=10)
# Exact re-ranking of this many candidates (FAISS's IndexRefineFlat, which
# keeps the float vectors in memory; Osprey keeps them on disk, mapped).
p.add_argument("--rerank", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--repeat", type=int, default=5)
a = p.parse_args()

faiss.omp_set_num_threads(a.threads)
g = np.ascontiguousarray(np.load(a.gallery_file), dtype=np.float32)
q = np.ascontiguousarray(np.load(a.query_file), dtype=np.float32)
d = g.shape[1]

t0 = time.perf_counter()
index = faiss.index_factory(d, a.index, faiss.METRIC_INNER_PRODUCT)
if not index.is_trained:
    index.train(g)
index.add(g)
build_s = time.perf_counter() - t0
if a.nprobe is not None:
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", a.nprobe)
code_bytes = len(faiss.serialize_index(index))
if a.rerank > 0:
    base = index
    t0 = time.perf_counter()
    index = faiss.IndexRefineFlat(base, faiss.swig_ptr(g))
    build_s += time.perf_counter() - t0
    index.k_factor = max(1.0, a.rerank / a.k)

best = float("inf")
for _ in range(max(1, a.repeat)):
    t = time.perf_counter()
    _, found = index.search(q, a.k)
    best = min(best, time.perf_counter() - t)

exact = faiss.IndexFlatIP(d)
exact.add(g)
_, truth = exact.search(q, a.k)
hits = sum(len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth))
print(json.dumps({
    "impl": "faiss-cpu " + faiss.__version__,
    "index": a.index, "nprobe": a.nprobe, "rerank": a.rerank, "n": g.shape[0], "nq": q.shape[0], "dim": d, "k": a.k,
    "threads": a.threads, "recall_at_k": hits / (q.shape[0] * a.k), "qps": q.shape[0] / best,
    "build_s": build_s, "bytes_per_vector": code_bytes / g.shape[0],
}))
