#!/usr/bin/python3
"""COPY in both directions through pgwarden, including rows larger than any buffer."""
import hashlib
import os
import time

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


def extended_copy_in(conn, table, data):
    """COPY FROM STDIN the way libpq's PQexecParams sends it: Parse, Bind, Describe, Execute
    and Sync at once, the data, then CopyDone and a second Sync. The server ignores the first
    Sync (it reads it in COPY mode), so there is one ReadyForQuery for two Syncs. Returns the
    final result's status and error message."""
    from psycopg import pq
    pgconn = conn.pgconn
    pgconn.send_query_params(f"COPY {table} FROM STDIN".encode(), None)
    assert pgconn.get_result().status == pq.ExecStatus.COPY_IN
    pgconn.put_copy_data(data)
    pgconn.put_copy_end()
    result = pgconn.get_result()
    assert pgconn.get_result() is None
    return result.status, result.error_message


def test_extended_copy_in_gives_the_server_back():
    # One server for the pool: a copy that left it owing a ReadyForQuery it will never send
    # would keep it from the next client until query_wait_timeout.
    import psycopg
    from psycopg import pq
    with harness.Pgwarden(pg(), default_pool_size=1, query_wait_timeout=30,
                          admin_users="scram_user") as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS t_copy_ext")
            conn.execute("CREATE TABLE t_copy_ext (id int)")
            status, _ = extended_copy_in(conn, "t_copy_ext", b"1\n2\n3\n")
            assert status == pq.ExecStatus.COMMAND_OK
            # A bad row: the error, then the connection works on.
            status, message = extended_copy_in(conn, "t_copy_ext", b"4\nnot-a-number\n")
            assert status == pq.ExecStatus.FATAL_ERROR and b"invalid input syntax" in message
            with psycopg.connect(pw.dsn(db="pgbouncer"), autocommit=True) as console:
                leases = console.execute("SHOW LEASES").fetchall()
                assert leases == [], f"the copy still holds the server: {leases}"
            started = time.monotonic()
            with psycopg.connect(pw.dsn(), autocommit=True) as other:
                assert other.execute("SELECT count(*) FROM t_copy_ext").fetchone()[0] == 3
            assert time.monotonic() - started < 5
            assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_abandoned_extended_copy_in_never_reaches_another_client():
    # The client vanishes in the middle of an extended-protocol COPY FROM STDIN: the server
    # waits for data (and would then wait for a Sync); it must be closed, not handed on.
    import psycopg
    with harness.Pgwarden(pg(), default_pool_size=1, query_wait_timeout=30) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS t_copy_gone")
            conn.execute("CREATE TABLE t_copy_gone (id int)")
        conn = psycopg.connect(pw.dsn(), autocommit=True)
        pgconn = conn.pgconn
        pgconn.send_query_params(b"COPY t_copy_gone FROM STDIN", None)
        pgconn.get_result()
        pgconn.put_copy_data(b"1\n2\n")
        pgconn.flush()
        os.close(os.dup2(os.open(os.devnull, os.O_RDWR), pgconn.socket))  # gone, no Terminate
        started = time.monotonic()
        with psycopg.connect(pw.dsn(), autocommit=True) as other:
            assert other.execute("SELECT 42").fetchone()[0] == 42
            assert other.execute("SELECT count(*) FROM t_copy_gone").fetchone()[0] == 0
        assert time.monotonic() - started < 10
        try:
            conn.close()
        except Exception:
            pass


if __name__ == "__main__":
    harness.main(globals())
