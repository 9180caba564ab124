#!/usr/bin/env bash
# pgbench select-only (-S) and simple-update (-N), -M prepared, against Basalt
# and a PostgreSQL 15 server on this machine, in one run.
#   benches/pgbench.sh                       # scale 10, 8 clients, 30 s per run
#   SCALE=1 DURATION=10 benches/pgbench.sh   # quicker
# Needs apt postgresql-15 and postgresql-contrib (pgbench); run as root or a
# user that can `runuser -u postgres` (initdb refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/basalt-target}"
SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-8}"
DURATION="${DURATION:-30}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
PG_PORT=55433
BASALT_PORT=55434

cargo build --release -q --bin basalt
work="$(mktemp -d /tmp/basalt-pgbench.XXXXXX)"
chmod 755 "$work"
cleanup() {
    [ -n "${basalt_pid:-}" ] && kill "$basalt_pid" 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}')"
mkdir "$work/pg" && chown postgres "$work/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$work/pg" -U postgres --auth=trust >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
    -o "-p $PG_PORT -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_connections=50" start >/dev/null
pg=(-h 127.0.0.1 -p "$PG_PORT" -U postgres postgres)
pgbench -q -i -s "$SCALE" "${pg[@]}" 2>&1 | tail -1

echo "== Basalt"
"$CARGO_TARGET_DIR/release/basalt" serve --data "$work/basalt" --listen "127.0.0.1:$BASALT_PORT" >"$work/basalt.log" 2>&1 &
basalt_pid=$!
for _ in $(seq 50); do
    pg_isready -q -h 127.0.0.1 -p "$BASALT_PORT" && break
    sleep 0.2
done
basalt=(-h 127.0.0.1 -p "$BASALT_PORT" -U basalt basalt)
# pgbench's own schema step adds the primary keys after loading (ALTER TABLE
# ADD PRIMARY KEY), which Basalt does not do: the tables are made with their
# keys first, and pgbench only generates the data (TRUNCATE + COPY).
psql -X -q -v ON_ERROR_STOP=1 "${basalt[@]}" <<'SQL'
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
SQL
start=$(date +%s.%N)
pgbench -q -i -I g -s "$SCALE" "${basalt[@]}" 2>&1 | tail -1
echo "Basalt load: $(echo "$(date +%s.%N) - $start" | bc) s"

run() {  # run NAME MODE-FLAG CONNECTION...
    local name=$1 mode=$2
    shift 2
    # Basalt's transaction blocks are snapshot-isolated: two blocks updating
    # one account conflict, and the later COMMIT fails with 40001 where
    # PostgreSQL's READ COMMITTED would wait. --max-tries retries those
    # (and only those), on both systems alike; the retries are reported.
    pgbench -n -M prepared --max-tries=10 "$mode" -c "$CLIENTS" -j 2 -T "$DURATION" "$@" 2>&1 |
        awk -v n="$name" '/^tps = /{print n, $3} /^latency average/{print n, "latency_ms", $4} /failed trans|retried/{print n, $0}'
}
declare -A tps
for mode in -S -N; do
    for system in postgres basalt; do
        if [ $system = postgres ]; then args=("${pg[@]}"); else args=("${basalt[@]}"); fi
        out=$(run "$system$mode" "$mode" "${args[@]}")
        echo "$out"
        tps[$system$mode]=$(echo "$out" | awk '$2 ~ /^[0-9.]+$/ {print $2}')
    done
done
for mode in -S -N; do
    echo "ratio basalt/postgres $mode: $(echo "scale=3; ${tps[basalt$mode]:-0} / ${tps[postgres$mode]}" | bc)"
done
