#!/usr/bin/python3
"""Pooling: many clients on a small pool, dirty servers never reused, SIGHUP resizing."""
import asyncio
import os
import signal
import subprocess
import sys
import time

import harness
from common import pg


def test_500_clients_on_pool_of_10():
    import asyncpg

    async def client(pw, i):
        conn = await asyncpg.connect(pw.url(user="app_user"), timeout=30,
                                     statement_cache_size=0)
        try:
            total = 0
            for _ in range(3):
                total += await conn.fetchval("SELECT $1::int FROM pg_sleep(0.01)", i)
            return total
        finally:
            await conn.close()

    async def all_clients(pw):
        return await asyncio.gather(*(client(pw, i) for i in range(500)))

    with harness.Pgwarden(pg(), default_pool_size=10, max_client_conn=1000) as pw:
        results, peak, samples = harness.max_backends_during(
            pg(), lambda: asyncio.run(all_clients(pw)), user="app_user")
        assert results == [3 * i for i in range(500)]
        assert samples > 5
        assert 0 < peak <= 10, f"PostgreSQL saw {peak} backends for a pool of 10"
        print(f"  500 clients done, peak backends {peak}")


def test_killed_client_mid_transaction_releases_lock():
    with harness.Pgwarden(pg(), default_pool_size=1) as pw:
        harness.psql(pw.dsn(), "DROP TABLE IF EXISTS t_lock; CREATE TABLE t_lock (id int primary key, v int);"
                               "INSERT INTO t_lock VALUES (1, 0)")
        holder = f"""
import psycopg, sys, time
conn = psycopg.connect({pw.dsn()!r})
conn.execute("SELECT * FROM t_lock WHERE id = 1 FOR UPDATE")
conn.execute("UPDATE t_lock SET v = 99 WHERE id = 1")
print("locked", flush=True)
time.sleep(60)
"""
        proc = subprocess.Popen(["/usr/bin/python3", "-c", holder], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "locked"
            proc.kill()
            proc.wait(10)
            import psycopg
            with psycopg.connect(pw.dsn(), autocommit=True) as conn:
                # The same (only) server: no transaction left open, the row lock is free and
                # the uncommitted update was rolled back.
                assert conn.execute("SELECT txid_current_if_assigned() IS NULL").fetchone()[0]
                row = conn.execute("SELECT v FROM t_lock WHERE id = 1 FOR UPDATE NOWAIT").fetchone()
                assert row[0] == 0, row
                status = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in%'"
                                      ).fetchone()[0]
                assert status == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_client_killed_during_long_query_cancels_it():
    with harness.Pgwarden(pg(), default_pool_size=1) as pw:
        proc = subprocess.Popen(["psql", "-X", "-d", pw.dsn(), "-c", "SELECT pg_sleep(30)"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness.wait_until(lambda: pg().sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'"
        )[0][0] == "1", 10, what="pg_sleep to start")
        proc.kill()
        proc.wait()
        start = time.monotonic()
        # The only server comes back once the query is cancelled, long before 30 s.
        assert harness.psql(pw.dsn(), "SELECT 'next'", timeout=20).stdout.strip() == "next"
        assert time.monotonic() - start < 5


def test_sighup_changes_pool_size():
    import psycopg
    from concurrent.futures import ThreadPoolExecutor

    def burst(pw):
        def one(_):
            with psycopg.connect(pw.dsn(), autocommit=True) as conn:
                conn.execute("SELECT pg_sleep(0.5)")
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(one, range(16)))

    with harness.Pgwarden(pg(), default_pool_size=2) as pw:
        _, before, _ = harness.max_backends_during(pg(), lambda: burst(pw), user="scram_user")
        pw.rewrite_config(default_pool_size=4)
        pw.reload()
        harness.wait_until(lambda: "configuration reloaded" in pw.log(), 5, what="reload")
        _, after, _ = harness.max_backends_during(pg(), lambda: burst(pw), user="scram_user")
        assert before == 2, before
        assert after == 4, after
        assert pw.proc.poll() is None


def test_session_mode_reset_between_clients():
    import psycopg
    with harness.Pgwarden(pg(), pool_mode="session", default_pool_size=1) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            conn.execute("SET work_mem = '7MB'")
            conn.execute("CREATE TEMP TABLE leftover (i int)")
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
            assert conn.execute("SHOW work_mem").fetchone()[0] == "4MB"
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'"
                                ).fetchone()[0] == 0


if __name__ == "__main__":
    harness.main(globals())
