#!/usr/bin/python3
"""One Python driver's statement cache through a transaction-mode pool, run as its own process by
test_prepared.py: `prepared_driver.py asyncpg|psycopg URL CLIENTS SECONDS`. Every client loops
over 10 statements (the driver prepares them: asyncpg's statement cache, psycopg 3 with
prepare_threshold=0), now and then inside a transaction, and checks every result. Prints one
JSON line: {"ops": n, "errors": n, "first_error": "..."}."""
import asyncio
import json
import sys
import time


async def loop(conn, cid, deadline, tally, fetchval, transaction):
    """The shared workload: `fetchval(conn, sql_template, k, cid)` runs one statement."""
    i = 0
    while i == 0 or time.monotonic() < deadline:  # at least one each
        k = i % 10
        i += 1
        try:
            if i % 5 == 0:
                async with transaction(conn):
                    a = await fetchval(conn, "SELECT {p}::int + {k}", k, cid)
                    b = await fetchval(conn, "SELECT {p}::int * 2 + {k}", k, cid)
                ok = a == cid + k and b == cid * 2 + k
            else:
                ok = await fetchval(conn, "SELECT {p}::int + {k}", k, cid) == cid + k
            if not ok:
                raise AssertionError(f"client {cid}: wrong result")
            tally["ops"] += 1
        except Exception as e:  # counted: the test wants zero
            tally["errors"] += 1
            tally["first_error"] = tally["first_error"] or repr(e)


async def run_asyncpg(url, clients, deadline, tally):
    import asyncpg

    async def fetchval(conn, template, k, cid):
        return await conn.fetchval(template.format(p="$1", k=k), cid)

    async def client(cid):
        conn = await asyncpg.connect(url, timeout=60)
        try:
            await loop(conn, cid, deadline, tally, fetchval, lambda c: c.transaction())
        finally:
            await conn.close()

    await asyncio.gather(*(client(c) for c in range(clients)))


async def run_psycopg(url, clients, deadline, tally):
    import psycopg

    async def fetchval(conn, template, k, cid):
        return (await (await conn.execute(template.format(p="%s", k=k), (cid,))).fetchone())[0]

    async def client(cid):
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=60)
        conn.prepare_threshold = 0  # every statement is prepared (named Parse) on first use
        try:
            await loop(conn, cid, deadline, tally, fetchval, lambda c: c.transaction())
        finally:
            await conn.close()

    await asyncio.gather(*(client(c) for c in range(clients)))


def main():
    driver, url, clients, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    tally = {"ops": 0, "errors": 0, "first_error": ""}
    deadline = time.monotonic() + seconds
    runner = run_asyncpg if driver == "asyncpg" else run_psycopg
    asyncio.run(runner(url, clients, deadline, tally))
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
