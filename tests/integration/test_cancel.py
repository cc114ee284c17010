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
                harness.cancel_sleep(conn, after=0.5, within=1.5)
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


def test_late_cancel_never_hits_another_client():
    """A cancel that reaches PostgreSQL after its query has finished must not cancel the next
    client's query on the same backend: the server is only reused once PostgreSQL has acted on
    the cancel. One server connection, one client cancelling its own short queries at random
    moments (often after they finished), another client running queries on the same backend."""
    import random
    import psycopg
    with harness.Pgwarden(pg(), pool_mode="transaction", default_pool_size=1) as pw:
        stop = threading.Event()
        bystander = {"queries": 0, "cancelled": 0, "errors": []}

        # prepare_threshold=None: no server-side prepared statements in transaction pooling.
        def other_client():
            with psycopg.connect(pw.dsn(), autocommit=True, prepare_threshold=None) as conn:
                while not stop.is_set():
                    try:
                        conn.execute("SELECT pg_sleep(0.002)").fetchone()
                        bystander["queries"] += 1
                    except psycopg.errors.QueryCanceled:
                        bystander["cancelled"] += 1
                    except Exception as e:  # noqa: BLE001
                        bystander["errors"].append(repr(e))
                        return

        thread = threading.Thread(target=other_client)
        thread.start()
        rng = random.Random(7)
        own_cancels = 0
        try:
            with psycopg.connect(pw.dsn(), autocommit=True, prepare_threshold=None) as conn:
                for _ in range(100):
                    # Aimed at the last milliseconds of the query: the cancel is forwarded while
                    # it runs and often reaches PostgreSQL just after it has finished.
                    timer = threading.Timer(rng.uniform(0.006, 0.012), conn.cancel)
                    timer.start()
                    try:
                        conn.execute("SELECT pg_sleep(0.01)")
                    except psycopg.errors.QueryCanceled:
                        own_cancels += 1
                    timer.join()
                    time.sleep(rng.uniform(0.0, 0.01))
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not bystander["errors"], bystander["errors"]
        assert bystander["queries"] > 50, bystander
        assert bystander["cancelled"] == 0, (
            f"{bystander['cancelled']} queries of the other client were cancelled "
            f"({own_cancels} of the canceller's own were)")


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
