"""hnswlib's side of `benches/run vector`: builds an index over DIR/base.f32
with the same M and ef_construction on every core, then answers the same
queries single-threaded at each ef. Usage:
    vector_hnswlib.py DIR DIMS M EF_CONSTRUCTION EF[,EF...]
Prints figures, then one JSON line."""

import json
import os
import sys
import time

import hnswlib
import numpy as np

K = 10


def main():
    directory, dims, m, ef_construction, efs = sys.argv[1:6]
    dims, m, ef_construction = int(dims), int(m), int(ef_construction)
    efs = [int(e) for e in efs.split(",")]
    base = np.fromfile(os.path.join(directory, "base.f32"), dtype="<f4").reshape(-1, dims)
    queries = np.fromfile(os.path.join(directory, "queries.f32"), dtype="<f4").reshape(-1, dims)
    truth = np.fromfile(os.path.join(directory, "truth.u32"), dtype="<u4").reshape(-1, K)

    index = hnswlib.Index(space="l2", dim=dims)
    started = time.perf_counter()
    index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction, random_seed=1)
    index.add_items(base, np.arange(len(base)), num_threads=os.cpu_count())
    build = time.perf_counter() - started
    path = os.path.join(directory, "hnswlib.bin")
    index.save_index(path)
    size = os.path.getsize(path)
    print(f"hnswlib build {build:.1f} s, index file {size / 2**20:.1f} MiB (vectors included)")

    # One untimed pass first, as on Basalt's side.
    index.set_ef(max(efs[0], K))
    index.knn_query(queries, k=K, num_threads=1)
    recall, qps = {}, {}
    for ef in efs:
        index.set_ef(max(ef, K))
        started = time.perf_counter()
        labels, _ = index.knn_query(queries, k=K, num_threads=1)
        elapsed = time.perf_counter() - started
        hits = sum(len(set(found) & set(expected)) for found, expected in zip(labels, truth))
        recall[str(ef)] = hits / truth.size
        qps[str(ef)] = len(queries) / elapsed
        print(f"hnswlib ef_search={ef:<4} recall@10 {recall[str(ef)]:.4f}  {qps[str(ef)]:>8.0f} queries/s")
    print(json.dumps({"build_s": build, "index_bytes": size, "recall": recall, "qps": qps}))


if __name__ == "__main__":
    main()
