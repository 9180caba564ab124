"""DuckDB's side of the TPC-H comparison, started by `benches/run tpch`.

Loads the same Parquet files into DuckDB's own tables (Basalt reads its own
storage too), runs each query `runs` times and prints one JSON object:
{"version": ..., "threads": ..., "queries": {"q01": {"best_ms": .., "rows": [[..]]}}}.
Values are strings (None for NULL) so both sides compare the same way.
"""

import datetime
import decimal
import json
import os
import sys
import time

import duckdb

TABLES = ["region", "nation", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def text(value):
    if value is None:
        return None
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, float, int)):
        return str(value)
    return str(value)


def main():
    data_dir, queries_dir, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    only = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else None
    con = duckdb.connect()
    threads = os.cpu_count()
    con.execute(f"SET threads = {threads}")
    for table in TABLES:
        path = os.path.join(data_dir, f"{table}.parquet")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{path}')")
    results = {}
    for name in sorted(os.listdir(queries_dir)):
        if not name.endswith(".sql"):
            continue
        query = name[:-4]
        if only and query not in only:
            continue
        with open(os.path.join(queries_dir, name)) as f:
            sql = f.read()
        best = None
        rows = None
        for _ in range(runs):
            start = time.perf_counter()
            rows = con.execute(sql).fetchall()
            elapsed = (time.perf_counter() - start) * 1000
            best = elapsed if best is None else min(best, elapsed)
        results[query] = {"best_ms": best, "rows": [[text(v) for v in row] for row in rows]}
    print(json.dumps({"version": duckdb.__version__, "threads": threads, "queries": results}))


if __name__ == "__main__":
    main()
