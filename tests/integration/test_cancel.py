#!/usr/bin/python3
"""Cancel requests reach the right backend through pgwarden's own cancel keys."""
import threading
import time

import harness
from common import pg


def test_cancel_pg_sleep_psycopg():
    import psycopg
    for mode in ("transaction", "session"):
        with harness.Pgwarden(pg(), pool_mode=mode) as pw:
            with psycopg.connect(pw.dsn(), autocommit=True) as conn:
                timer = threading.Timer(0.5, conn.cancel)
                timer.start()
                start = time.monotonic()
                try:
                    conn.execute("SELECT pg_sleep(30)")
                    raise AssertionError("pg_sleep was not cancelled")
                except psycopg.errors.QueryCanceled as e:
                    assert e.sqlstate == "57014"
                elapsed = time.monotonic() - start
                assert elapsed < 1.5, f"cancel took {elapsed:.2f}s"
                assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_cancel_from_asyncpg_timeout():
    import asyncio
    import asyncpg

    async def scenario(pw):
        conn = await asyncpg.connect(pw.url(), timeout=10)
        try:
            start = time.monotonic()
            try:
                await conn.execute("SELECT pg_sleep(30)", timeout=0.5)
                raise AssertionError("no timeout")
            except asyncio.TimeoutError:
                pass
            assert time.monotonic() - start < 2
            assert await conn.fetchval("SELECT 5") == 5
        finally:
            await conn.close()

    with harness.Pgwarden(pg(), pool_mode="session") as pw:
        asyncio.run(scenario(pw))


def test_unknown_cancel_key_is_ignored():
    import struct
    with harness.Pgwarden(pg()) as pw:
        raw = harness.RawClient(pw.port)
        raw.send(struct.pack("!IIii", 16, 80877102, 12345, 67890))
        assert raw.sock.recv(100) == b""  # closed without a reply, like PostgreSQL
        raw.close()
        assert harness.psql(pw.dsn(), "SELECT 1").stdout.strip() == "1"


if __name__ == "__main__":
    harness.main(globals())
