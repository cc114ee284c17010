#!/usr/bin/python3
"""Protocol behaviour that must be invisible to clients: parameters follow the client across
pooled servers, pipelines, large messages streamed without buffering, server-side auth
methods, and a changed [databases] entry on reload."""
import os
import time

import harness
from common import pg


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_parameters_follow_the_client_in_transaction_mode():
    import psycopg
    # One server for two clients: each must see only its own settings on it.
    with harness.Pgwarden(pg(), default_pool_size=1) as pw:
        a = psycopg.connect(pw.dsn(), application_name="app_a",
                            options="-c search_path=pg_catalog,public -c work_mem=5MB",
                            autocommit=True)
        b = psycopg.connect(pw.dsn(), application_name="app_b", autocommit=True)
        try:
            a.execute("SET DateStyle = 'German, DMY'")
            a.execute("SET TimeZone = 'Asia/Tokyo'")
            b.execute("SET IntervalStyle = 'iso_8601'")
            for _ in range(3):
                pid_a = a.execute("SELECT pg_backend_pid()").fetchone()[0]
                pid_b = b.execute("SELECT pg_backend_pid()").fetchone()[0]
                assert pid_a == pid_b  # really the same server
                # (search_path as PostgreSQL itself shows a startup "-c" value: unnormalised)
                got_a = a.execute("SELECT current_setting('application_name'), "
                                  "current_setting('DateStyle'), current_setting('TimeZone'), "
                                  "current_setting('search_path'), current_setting('work_mem'), "
                                  "current_setting('IntervalStyle')").fetchone()
                got_b = b.execute("SELECT current_setting('application_name'), "
                                  "current_setting('DateStyle'), current_setting('TimeZone'), "
                                  "current_setting('search_path'), current_setting('work_mem'), "
                                  "current_setting('IntervalStyle')").fetchone()
                assert got_a == ("app_a", "German, DMY", "Asia/Tokyo", "pg_catalog,public",
                                 "5MB", "postgres"), got_a
                assert got_b[0] == "app_b" and got_b[1] == "ISO, MDY" and got_b[5] == "iso_8601", got_b
                assert got_b[3] == '"$user", public' and got_b[4] == "4MB", got_b
        finally:
            a.close()
            b.close()


def test_long_pipeline_of_extended_messages():
    import psycopg
    with harness.Pgwarden(pg(), default_pool_size=2) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS t_pipe; CREATE TABLE t_pipe (id int primary key)")
            with conn.pipeline():
                cursors = [conn.execute("INSERT INTO t_pipe VALUES (%s) RETURNING id", (i,))
                           for i in range(2000)]
            assert [c.fetchone()[0] for c in cursors] == list(range(2000))
            assert conn.execute("SELECT count(*) FROM t_pipe").fetchone()[0] == 2000


def test_large_messages_stream_through_without_buffering():
    import psycopg
    with harness.Pgwarden(pg(), default_pool_size=2) as pw:
        before = rss_kb(pw.pid)
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            # 64 MB from server to client in one DataRow, and a 16 MB query the other way.
            size = conn.execute("SELECT length(repeat('x', 64 * 1024 * 1024))").fetchone()[0]
            assert size == 64 * 1024 * 1024
            value = conn.execute("SELECT repeat('x', 64 * 1024 * 1024)").fetchone()[0]
            assert len(value) == 64 * 1024 * 1024
            del value
            literal = "y" * (16 * 1024 * 1024)
            assert conn.execute(f"SELECT length('{literal}')").fetchone()[0] == len(literal)
        grown_mb = (rss_kb(pw.pid) - before) / 1024
        assert grown_mb < 24, f"pgwarden grew by {grown_mb:.0f} MB relaying large messages"


def test_server_login_with_every_method():
    # PostgreSQL asks pgwarden for scram (scram_user), md5 (md5_user), cleartext
    # (password_user) or nothing (trust_user); the client side is plain SCRAM throughout.
    userlist = dict(harness.USERS, trust_user="trust_pw")
    with harness.Pgwarden(pg(), userlist=userlist) as pw:
        for user in ("scram_user", "md5_user", "password_user", "trust_user"):
            out = harness.psql(pw.dsn(user=user, password=userlist[user]),
                               "SELECT current_user").stdout.strip()
            assert out == user, (user, out)


def test_reload_applies_changed_database_entry_to_new_servers():
    import psycopg
    with harness.Pgwarden(pg(), default_pool_size=2, server_idle_timeout=0) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as held:
            assert held.execute("SELECT current_database()").fetchone()[0] == "pgwarden_test"
            pw.databases["pgwarden_test"] = f"host=127.0.0.1 port={pg().port} dbname=postgres"
            pw.write_config()
            pw.reload()
            harness.wait_until(lambda: "configuration reloaded" in pw.log(), 5, what="reload")
            # The connected client keeps working; new server connections go to the new target.
            held.execute("SELECT 1")
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "postgres"


def test_oversized_message_is_08P01():
    with harness.Pgwarden(pg(), auth_type="trust") as pw:
        client = harness.RawClient(pw.port)
        client.send_startup({"user": "scram_user", "database": "pgwarden_test"})
        assert client.read_until()[-1][0] == b"Z"
        # A Sync claiming 100 kB: PostgreSQL limits such messages to 10000 bytes.
        client.send(b"S" + (100_000).to_bytes(4, "big"))
        error = harness.first_error(client.read_until(types=(), limit=10))
        assert error and error["C"] == "08P01", error
        harness.psql(pw.dsn(), "SELECT 1")


if __name__ == "__main__":
    harness.main(globals())
