#!/usr/bin/env bash
# Bulk load of TPC-H lineitem (SF1 by default) from CSV and from Parquet:
# `basalt load` against DuckDB's COPY ... FROM (pip duckdb) and PostgreSQL
# 15's COPY FROM, in one run, each into an empty table keyed on
# (l_orderkey, l_linenumber) in a fresh on-disk database, timed to durable.
#   benches/load.sh                      # ~/.cache/basalt-tpch/sf1/lineitem.parquet
#   PARQUET=/path/lineitem.parquet benches/load.sh
#   PG=0 benches/load.sh                 # without PostgreSQL
# The CSV is written from the Parquet file by DuckDB (header, comma).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}"
PARQUET="${PARQUET:-$HOME/.cache/basalt-tpch/sf1/lineitem.parquet}"
PG="${PG:-1}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
PG_PORT=55435

cargo build --release -q --bin basalt
basalt="$CARGO_TARGET_DIR/release/basalt"
work="$(mktemp -d /tmp/basalt-load.XXXXXX)"
chmod 755 "$work"
cleanup() {
    if [ "$PG" = 1 ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

python3 - "$PARQUET" "$work" <<'EOF'
import sys, duckdb
parquet, work = sys.argv[1], sys.argv[2]
duckdb.sql(f"COPY (SELECT * FROM '{parquet}') TO '{work}/lineitem.csv' (HEADER)")
duckdb.sql(f"COPY (SELECT * FROM '{parquet}' LIMIT 0) TO '{work}/empty.parquet'")
EOF
chmod 644 "$work/lineitem.csv"
rows=$(python3 -c "import duckdb,sys; print(duckdb.sql(\"SELECT count(*) FROM '$PARQUET'\").fetchall()[0][0])")
csv_bytes=$(stat -c %s "$work/lineitem.csv")
pq_bytes=$(stat -c %s "$PARQUET")
echo "lineitem: $rows rows; CSV $csv_bytes bytes; Parquet $pq_bytes bytes; $(nproc) cores"

seconds() { python3 -c "import time; print(time.time())"; }

basalt_load() { # name file
    local dir="$work/basalt-$1"
    "$basalt" load --quiet --data "$dir" --table lineitem --create \
        --key l_orderkey,l_linenumber "$work/empty.parquet"
    sync
    local start end
    start=$(seconds)
    "$basalt" load --quiet --data "$dir" --table lineitem "$2"
    end=$(seconds)
    python3 -c "print(f'basalt  $1: {$end - $start:.2f} s, {$rows / ($end - $start):,.0f} rows/s')"
    echo "basalt $1 $(python3 -c "print($end - $start)")" >>"$work/times"
}

duckdb_load() { # name file keyed
    python3 - "$work" "$1" "$2" "$3" "$rows" <<'EOF' | tee -a "$work/times.duck"
import sys, time, duckdb
work, name, path, keyed, rows = sys.argv[1:6]
con = duckdb.connect(f"{work}/duck-{name}-{keyed}.db")
key = ", PRIMARY KEY (l_orderkey, l_linenumber)" if keyed == "key" else ""
con.sql(f"""CREATE TABLE lineitem (l_orderkey BIGINT NOT NULL, l_partkey BIGINT, l_suppkey BIGINT,
  l_linenumber INTEGER NOT NULL, l_quantity DECIMAL(15,2), l_extendedprice DECIMAL(15,2),
  l_discount DECIMAL(15,2), l_tax DECIMAL(15,2), l_returnflag VARCHAR, l_linestatus VARCHAR,
  l_shipdate DATE, l_commitdate DATE, l_receiptdate DATE, l_shipinstruct VARCHAR,
  l_shipmode VARCHAR, l_comment VARCHAR{key})""")
con.sql("CHECKPOINT")
start = time.time()
if name == "csv":
    con.sql(f"COPY lineitem FROM '{path}' (HEADER)")
else:
    con.sql(f"INSERT INTO lineitem SELECT * FROM read_parquet('{path}')")
con.sql("CHECKPOINT")
took = time.time() - start
print(f"duckdb {name} {keyed}: {took:.2f} s, {int(rows) / took:,.0f} rows/s "
      f"(version {duckdb.__version__}, {con.sql('SELECT current_setting(' + repr('threads') + ')').fetchall()[0][0]} threads)")
EOF
}

echo "== Basalt"
basalt_load csv "$work/lineitem.csv"
basalt_load parquet "$PARQUET"
echo "== DuckDB"
for f in csv parquet; do
    file="$work/lineitem.csv"; [ "$f" = parquet ] && file="$PARQUET"
    duckdb_load "$f" "$file" key
    duckdb_load "$f" "$file" nokey
done

if [ "$PG" = 1 ]; then
    echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
    mkdir "$work/pg" && chown postgres "$work/pg"
    runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
        -o "-p $PG_PORT -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB" start >/dev/null
    psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres <<'EOF'
CREATE TABLE lineitem (l_orderkey bigint NOT NULL, l_partkey bigint, l_suppkey bigint,
  l_linenumber integer NOT NULL, l_quantity numeric(15,2), l_extendedprice numeric(15,2),
  l_discount numeric(15,2), l_tax numeric(15,2), l_returnflag text, l_linestatus text,
  l_shipdate date, l_commitdate date, l_receiptdate date, l_shipinstruct text,
  l_shipmode text, l_comment text, PRIMARY KEY (l_orderkey, l_linenumber));
EOF
    start=$(seconds)
    psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres \
        -c "COPY lineitem FROM '$work/lineitem.csv' (FORMAT csv, HEADER)" -c "CHECKPOINT"
    end=$(seconds)
    python3 -c "print(f'postgres csv: {$end - $start:.2f} s, {$rows / ($end - $start):,.0f} rows/s')"
fi
