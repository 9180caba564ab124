"""psycopg 3 against a running Basalt server: server-side parameters of
every common type, executemany, transactions, SQLSTATE errors, and COPY in
both directions. Usage: psycopg_client.py PORT. Exits non-zero on the first
mismatch."""

import datetime
import decimal
import struct
import sys
import uuid

import psycopg
from psycopg import errors

PORT = int(sys.argv[1])


def main():
    conninfo = f"host=127.0.0.1 port={PORT} user=basalt dbname=basalt"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        parameters(conn)
        transactions(conninfo)
        error_codes(conn)
        copy(conn)
        vectors(conn)
    print("psycopg: all checks passed")


def parameters(conn):
    conn.execute(
        "CREATE TABLE p (id bigint PRIMARY KEY, i int, f double precision, n numeric(12,3),"
        " s text, b bytea, d date, ts timestamp, tz timestamptz, ok boolean, a bigint[], u uuid)"
    )
    row = (
        1,
        -42,
        2.5,
        decimal.Decimal("1234.567"),
        "it's \"quoted\" \\ ünïcode",
        b"\x00\x01\xff",
        datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
        datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.timezone.utc),
        True,
        [1, None, 3],
        uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    )
    conn.execute("INSERT INTO p VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", row)
    conn.execute(
        "INSERT INTO p (id, s) VALUES (%s, %s)", (2, None)
    )
    got = conn.execute("SELECT * FROM p WHERE id = %s", (1,)).fetchone()
    check("typed round trip", tuple(got), row)
    # The same in binary format.
    with conn.cursor(binary=True) as cur:
        got = cur.execute("SELECT * FROM p WHERE id = %s", (1,)).fetchone()
        check("binary round trip", tuple(got), row)
    nulls = conn.execute("SELECT s, i FROM p WHERE id = %(id)s", {"id": 2}).fetchone()
    check("nulls", nulls, (None, None))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO p (id, s) VALUES (%s, %s)", [(i, f"row {i}") for i in range(10, 60)])
    count = conn.execute("SELECT count(*) FROM p WHERE id >= %s AND s LIKE %s", (10, "row %")).fetchone()
    check("executemany", count, (50,))


def transactions(conninfo):
    with psycopg.connect(conninfo) as conn:  # not autocommit: psycopg opens blocks
        conn.execute("INSERT INTO p (id, s) VALUES (100, 'kept')")
        conn.commit()
        conn.execute("INSERT INTO p (id, s) VALUES (101, 'dropped')")
        conn.rollback()
        with conn.transaction():
            conn.execute("INSERT INTO p (id, s) VALUES (102, 'block')")
        ids = conn.execute("SELECT id FROM p WHERE id >= 100 ORDER BY id").fetchall()
        check("commit and rollback", ids, [(100,), (102,)])


def error_codes(conn):
    cases = [
        ("SELECT * FROM nowhere", errors.UndefinedTable),
        ("INSERT INTO p (id) VALUES (1)", errors.UniqueViolation),
        ("SELEC 1", errors.SyntaxError),
    ]
    for sql, expected in cases:
        try:
            conn.execute(sql)
        except expected:
            continue
        except psycopg.Error as e:
            fail(f"{sql}: got {type(e).__name__} ({e.sqlstate})")
        fail(f"{sql}: no error")
    check("connection usable after errors", conn.execute("SELECT 1").fetchone(), (1,))


def copy(conn):
    conn.execute("CREATE TABLE c (id int PRIMARY KEY, name text, score double precision)")
    rows = [(i, None if i % 7 == 0 else f"name\t{i}\n", i / 8) for i in range(5000)]
    with conn.cursor() as cur:
        with cur.copy("COPY c (id, name, score) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        check("copy in rowcount", cur.rowcount, len(rows))
        got = []
        with cur.copy("COPY (SELECT id, name, score FROM c ORDER BY id) TO STDOUT") as cp:
            cp.set_types(["int4", "text", "float8"])
            for row in cp.rows():
                got.append(row)
        check("copy out", got, rows)
        # A failing COPY keeps nothing.
        try:
            with cur.copy("COPY c (id) FROM STDIN") as cp:
                cp.write_row((9000,))
                cp.write_row((1,))
        except errors.UniqueViolation:
            pass
        else:
            fail("duplicate key in COPY was accepted")
        check("failed copy", conn.execute("SELECT count(*) FROM c").fetchone(), (len(rows),))
        # CSV through copy.write of raw text.
        with cur.copy("COPY c FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
            cp.write('id,name,score\n9001,"a ""csv"", row",1.5\n')
        check(
            "csv copy",
            conn.execute("SELECT name, score FROM c WHERE id = 9001").fetchone(),
            ('a "csv", row', 1.5),
        )


def vectors(conn):
    """pgvector's text form both ways, its binary form out, COPY, the index."""
    conn.execute("CREATE TABLE vec (id int PRIMARY KEY, v vector(3))")
    conn.execute("INSERT INTO vec VALUES (%s, %s), (%s, %s)", (1, "[1,2,3]", 2, "[4,5,6]"))
    with conn.cursor() as cur:
        with cur.copy("COPY vec FROM STDIN") as copy:
            copy.write_row((3, "[7,8.5,9]"))
    conn.execute("CREATE INDEX ON vec USING hnsw (v vector_l2_ops) WITH (m = 8)")
    got = conn.execute("SELECT id, v FROM vec ORDER BY v <-> %s LIMIT 2", ("[4,5,5]",)).fetchall()
    check("nearest vectors", got, [(2, "[4,5,6]"), (1, "[1,2,3]")])
    with conn.cursor(binary=True) as cur:
        raw = cur.execute("SELECT v FROM vec WHERE id = 3").fetchone()[0]
        dims, unused = struct.unpack(">hh", raw[:4])
        check("binary vector", (dims, unused, struct.unpack(">3f", raw[4:])), (3, 0, (7.0, 8.5, 9.0)))
    with conn.cursor() as cur:
        with cur.copy("COPY vec TO STDOUT") as copy:
            out = b"".join(bytes(block) for block in copy)
    check("copy out", out, b"1\t[1,2,3]\n2\t[4,5,6]\n3\t[7,8.5,9]\n")
    try:
        conn.execute("INSERT INTO vec VALUES (%s, %s)", (4, "[1,2]"))
        fail("a 2-dimensional vector went into vector(3)")
    except psycopg.Error as e:
        check("dimension error", e.sqlstate, "22000")


def check(what, got, expected):
    if got != expected:
        fail(f"{what}: got {got!r}, expected {expected!r}")


def fail(message):
    print(f"psycopg: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
