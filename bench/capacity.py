"""Capacity measurements for the poolers: RSS per idle client and sequential login rate.

Both use pgwire's raw client (SCRAM-SHA-256 done in Python) against a freshly started pooler.
"""
import asyncio
import time

import contestants as C
import pgwire


def warm_up(pooler):
    """One login and one query, so the pool and its first server connection exist before the
    baseline is taken."""
    conn = pgwire.login_sync(pooler.host, pooler.port, C.USER, C.PASSWORD, C.DATABASE)
    try:
        conn.query("SELECT 1")
    finally:
        conn.close()


async def _open_idle(pooler, n, concurrency, cache):
    sem = asyncio.Semaphore(concurrency)
    conns = []
    errors = []

    async def one():
        async with sem:
            try:
                conn = await asyncio.wait_for(
                    pgwire.login_async(pooler.host, pooler.port, C.USER, C.PASSWORD,
                                       C.DATABASE, cache=cache), 60)
                conns.append(conn)
            except Exception as e:  # noqa: BLE001  (reported, not fatal)
                errors.append(f"{type(e).__name__}: {e}")

    await asyncio.gather(*(one() for _ in range(n)))
    return conns, errors


async def _idle_session(pooler, n, concurrency, settle):
    cache = pgwire.ScramCache()
    started = time.monotonic()
    conns, errors = await _open_idle(pooler, n, concurrency, cache)
    connect_s = time.monotonic() - started
    await asyncio.sleep(settle)
    rss_after = pooler.rss_kb()
    open_count = sum(1 for c in conns if c.is_open())
    # The idle clients must still be usable: a few of them run a query.
    probe_errors = []
    for conn in conns[:: max(1, len(conns) // 10)][:10]:
        try:
            value = await asyncio.wait_for(conn.query("SELECT 1"), 30)
            if value != b"1":
                probe_errors.append(f"SELECT 1 returned {value!r}")
        except Exception as e:  # noqa: BLE001
            probe_errors.append(f"{type(e).__name__}: {e}")
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.2)
    return dict(connected=len(conns), still_open=open_count, connect_s=connect_s,
                rss_after_kb=rss_after, errors=errors, probe_errors=probe_errors)


def idle_clients(pooler, n, concurrency=64, settle=1.0):
    """Pooler RSS before and after `n` authenticated idle clients; KB per client."""
    warm_up(pooler)
    time.sleep(0.5)
    rss_before = pooler.rss_kb()
    pooler.reset_peak()
    out = asyncio.run(_idle_session(pooler, n, concurrency, settle))
    out["rss_before_kb"] = rss_before
    out["peak_rss_kb"] = pooler.peak_rss_kb()
    out["kb_per_client"] = ((out["rss_after_kb"] - rss_before) / out["connected"]
                            if out["connected"] else None)
    out["fd_limit"] = C.nofile_limit(pooler.pid)
    problems = []
    if out["errors"]:
        problems.append(f"{len(out['errors'])} of {n} idle clients failed to log in, first: "
                        f"{out['errors'][0]}")
    if out["still_open"] != out["connected"]:
        problems.append(f"only {out['still_open']} of {out['connected']} still open after "
                        f"{settle}s")
    if out["probe_errors"]:
        problems.append(f"probe queries failed: {out['probe_errors'][0]}")
    out["error"] = "; ".join(problems)
    return out


def login_rate(pooler, n, client_cache=False):
    """`n` sequential connect + SCRAM authenticate + Terminate; logins per second of wall time.

    The client computes PBKDF2 for every login, like libpq (about 2 ms of client CPU per login
    at 4096 iterations; it is in the wall time for both poolers). With `client_cache` it reuses
    the PBKDF2 result when the server sends the same salt again (only a pooler that caches its
    secret does), which takes most client cost out of the measurement."""
    cache = pgwire.ScramCache() if client_cache else None
    warm_up(pooler)
    errors = []
    cpu0 = pooler.cpu_ticks()
    started = time.monotonic()
    done = 0
    for _ in range(n):
        try:
            conn = pgwire.login_sync(pooler.host, pooler.port, C.USER, C.PASSWORD, C.DATABASE,
                                     cache=cache)
            conn.close()
            done += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
            if len(errors) > 100:
                break
    seconds = time.monotonic() - started
    ticks = pooler.cpu_ticks() - cpu0
    return dict(logins=done, seconds=seconds, rate=done / seconds if seconds else None,
                cpu_us_per_login=ticks * 1e6 / C.CLK_TCK / done if done else None,
                errors=errors,
                error=(f"{len(errors)} logins failed, first: {errors[0]}" if errors else ""))
