#!/usr/bin/python3
"""COPY in both directions through pgwarden, including rows larger than any buffer."""
import hashlib

import harness
from common import pg


def test_copy_in_and_out_psycopg():
    import psycopg
    with harness.Pgwarden(pg()) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS t_copy")
            conn.execute("CREATE TABLE t_copy (id int, payload text)")
            digest_in = hashlib.sha256()
            with conn.cursor().copy("COPY t_copy FROM STDIN") as copy:
                for i in range(100_000):
                    payload = f"row-{i}"
                    if i % 10_000 == 0:
                        payload = "x" * 200_000  # larger than pkt_buf and the socket buffers
                    copy.write_row((i, payload))
                    digest_in.update(payload.encode())
            assert conn.execute("SELECT count(*) FROM t_copy").fetchone()[0] == 100_000
            digest_out = hashlib.sha256()
            count = 0
            with conn.cursor().copy("COPY (SELECT id, payload FROM t_copy ORDER BY id) TO STDOUT") as copy:
                for row in copy.rows():
                    digest_out.update(row[1].encode())
                    count += 1
            assert count == 100_000
            assert digest_in.hexdigest() == digest_out.hexdigest()


def test_copy_psql_backslash_copy():
    with harness.Pgwarden(pg()) as pw:
        harness.psql(pw.dsn(), "DROP TABLE IF EXISTS t_pcopy; CREATE TABLE t_pcopy (a int, b text)")
        data = "".join(f"{i}\tline {i}\n" for i in range(5000))
        harness.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", pw.dsn(), "-c",
                     "\\copy t_pcopy FROM STDIN"], input=data, timeout=60)
        out = harness.run(["psql", "-X", "-d", pw.dsn(), "-c",
                           "\\copy (SELECT * FROM t_pcopy ORDER BY a) TO STDOUT"], timeout=60).stdout
        assert out == data


def test_copy_error_midway_keeps_connection_usable():
    import psycopg
    with harness.Pgwarden(pg()) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS t_copy_err")
            conn.execute("CREATE TABLE t_copy_err (id int)")
            try:
                with conn.cursor().copy("COPY t_copy_err FROM STDIN") as copy:
                    copy.write(b"1\n2\nnot-a-number\n4\n")
                raise AssertionError("COPY with a bad row succeeded")
            except psycopg.errors.InvalidTextRepresentation:
                pass
            assert conn.execute("SELECT count(*) FROM t_copy_err").fetchone()[0] == 0
            assert conn.execute("SELECT 7").fetchone()[0] == 7


if __name__ == "__main__":
    harness.main(globals())
