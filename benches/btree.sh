#!/usr/bin/env bash
# Secondary B-tree indexes through the wire, against a PostgreSQL 15 server on
# this machine, in one run (issue 26):
#  * point lookups on a B-tree-indexed non-key column of a ROWS-row table
#    (pgbench -M prepared, a custom script), PostgreSQL and Basalt interleaved
#    per round;
#  * single-row INSERT throughput into a table without a secondary index, with
#    one, and with one UNIQUE index, interleaved per round.
#   benches/btree.sh                           # 10M rows, 8 clients, 20 s, 3 rounds
#   ROWS=1000000 DURATION=10 benches/btree.sh  # quicker
# Needs apt postgresql-15 and postgresql-contrib (pgbench); run as root or a
# user that can `runuser -u postgres` (initdb refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}"
ROWS="${ROWS:-10000000}"
CLIENTS="${CLIENTS:-8}"
DURATION="${DURATION:-20}"
ROUNDS="${ROUNDS:-3}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
PG_PORT=55435
BASALT_PORT=55436

cargo build --release -q --bin basalt
work="$(mktemp -d /tmp/basalt-btree.XXXXXX)"
chmod 755 "$work"
cleanup() {
    [ -n "${basalt_pid:-}" ] && kill "$basalt_pid" 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/pg" && chown postgres "$work/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
    -o "-p $PG_PORT -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_connections=50" start >/dev/null
# Each server gets 1 GiB for its cache of table data: PostgreSQL's
# shared_buffers, Basalt's decoded column chunks.
"$CARGO_TARGET_DIR/release/basalt" serve --data "$work/basalt" --listen "127.0.0.1:$BASALT_PORT" \
    --cache-size 1GiB >"$work/basalt.log" 2>&1 &
basalt_pid=$!
for _ in $(seq 50); do
    pg_isready -q -h 127.0.0.1 -p "$BASALT_PORT" && break
    sleep 0.2
done
pg=(-h 127.0.0.1 -p "$PG_PORT" -U postgres postgres)
basalt=(-h 127.0.0.1 -p "$BASALT_PORT" -U basalt basalt)
sql() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
now() { date +%s.%N; }

# k is a permutation of the ids (a multiplier coprime with ROWS), so a
# lookup by k finds one row anywhere in the key order.
schema="CREATE TABLE lookup (id bigint PRIMARY KEY, k bigint, v text);
CREATE TABLE ins_plain (id bigint PRIMARY KEY, k bigint, v text);
CREATE TABLE ins_indexed (id bigint PRIMARY KEY, k bigint, v text);
CREATE INDEX ins_indexed_k ON ins_indexed (k);
CREATE TABLE ins_unique (id bigint PRIMARY KEY, k bigint, v text);
CREATE UNIQUE INDEX ins_unique_k ON ins_unique (k);"
rows="SELECT i, (i * 7919) % $ROWS, 'value-' || i FROM generate_series(0::bigint, $ROWS - 1) AS s(i)"
echo "== load $ROWS rows"
sql "${pg[@]}" -c "$schema"
sql "${basalt[@]}" -c "$schema"
start=$(now)
sql "${pg[@]}" -c "INSERT INTO lookup $rows"
echo "postgres load: $(echo "$(now) - $start" | bc) s"
start=$(now)
sql "${pg[@]}" -c "COPY ($rows) TO STDOUT" | sql "${basalt[@]}" -c "COPY lookup FROM STDIN"
echo "basalt load (COPY from postgres): $(echo "$(now) - $start" | bc) s"
start=$(now)
sql "${pg[@]}" -c "CREATE INDEX lookup_k ON lookup (k)" -c "VACUUM ANALYZE lookup"
echo "postgres create index + vacuum analyze: $(echo "$(now) - $start" | bc) s"
start=$(now)
sql "${basalt[@]}" -c "CREATE INDEX lookup_k ON lookup (k)"
echo "basalt create index: $(echo "$(now) - $start" | bc) s"
for system in pg basalt; do
    if [ $system = pg ]; then args=("${pg[@]}"); else args=("${basalt[@]}"); fi
    # Both answer the same row for the same k.
    echo "$system lookup check: $(sql "${args[@]}" -At -c "SELECT id || ':' || v FROM lookup WHERE k = 4242")"
done
echo "basalt plan: $(sql "${basalt[@]}" -At -c "EXPLAIN SELECT id, v FROM lookup WHERE k = 4242" | grep -o 'index=[a-z_]*')"

cat >"$work/lookup.sql" <<EOF
\set k random(0, $ROWS - 1)
SELECT id, v FROM lookup WHERE k = :k;
EOF
for table in ins_plain ins_indexed ins_unique; do
    cat >"$work/$table.sql" <<EOF
\set id random(1, 9000000000000000000)
INSERT INTO $table VALUES (:id, :id, 'x');
EOF
done

tps() {  # tps SCRIPT CONNECTION...
    local script=$1
    shift
    pgbench -n -M prepared -f "$script" -c "$CLIENTS" -j 2 -T "$DURATION" "$@" 2>&1 |
        awk '/^tps = /{print $3}'
}
declare -A results
for round in $(seq "$ROUNDS"); do
    for system in pg basalt; do
        if [ $system = pg ]; then args=("${pg[@]}"); else args=("${basalt[@]}"); fi
        t=$(tps "$work/lookup.sql" "${args[@]}")
        echo "round $round lookup $system $t"
        results[lookup_$system]+="$t "
    done
    for table in ins_plain ins_indexed ins_unique; do
        for system in pg basalt; do
            if [ $system = pg ]; then args=("${pg[@]}"); else args=("${basalt[@]}"); fi
            t=$(tps "$work/$table.sql" "${args[@]}")
            echo "round $round $table $system $t"
            results[${table}_$system]+="$t "
        done
    done
done
stats() {  # min and median of the numbers given
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {printf "min %.0f median %.0f", v[1], v[int((NR+1)/2)]}'
}
echo "== summary (transactions/s; min and median over $ROUNDS rounds)"
for key in lookup_pg lookup_basalt ins_plain_pg ins_plain_basalt ins_indexed_pg ins_indexed_basalt ins_unique_pg ins_unique_basalt; do
    # shellcheck disable=SC2086
    echo "$key $(stats ${results[$key]})"
done
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# shellcheck disable=SC2086
{
    lb=$(median ${results[lookup_basalt]}); lp=$(median ${results[lookup_pg]})
    pb=$(median ${results[ins_plain_basalt]}); ib=$(median ${results[ins_indexed_basalt]})
    ub=$(median ${results[ins_unique_basalt]})
}
echo "ratio lookup basalt/postgres (median): $(echo "scale=3; $lb / $lp" | bc)"
echo "ratio basalt insert plain/indexed (median; goal <= 1.5): $(echo "scale=3; $pb / $ib" | bc)"
echo "ratio basalt insert plain/unique (median): $(echo "scale=3; $pb / $ub" | bc)"
