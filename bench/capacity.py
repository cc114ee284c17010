"""Capacity measurements for the poolers: RSS per idle client, sequential login rate, and RSS
before, at the peak of and after a storm of logins that a cap mostly refuses.

All use pgwire's raw client (SCRAM-SHA-256 done in Python) against a freshly started pooler.
"""
import asyncio
import contextlib
import struct
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


# ---- login storm -----------------------------------------------------------------------------

STORM_APP = "storm"


@contextlib.contextmanager
def storm_config(pooler, keep):
    """The pooler's configuration for the storm, while the block runs: pgwarden caps the
    storm's application_name at `keep` clients with an `[apps]` line (what issue 19 describes);
    PgBouncer 1.18 has no per-application cap, so its `max_client_conn` is `keep`. Either way the
    logins over the cap are refused with an error before they authenticate."""
    saved = dict(pooler.settings)
    if pooler.name == "pgwarden":
        write_config = pooler.write_config

        def write_config_with_apps():
            write_config()
            with open(pooler.ini, "a") as f:
                f.write(f"[apps]\n{STORM_APP} = max_client_conn={keep}\n")
        pooler.write_config = write_config_with_apps
    else:
        pooler.settings["max_client_conn"] = str(keep)
    try:
        yield
    finally:
        pooler.settings = saved
        pooler.__dict__.pop("write_config", None)


async def _login_as_app(pooler, app, cache):
    """pgwire.login_async with an application_name in the startup packet (SCRAM-SHA-256 only,
    which is what the bench's poolers ask for)."""
    reader, writer = await asyncio.open_connection(pooler.host, pooler.port, limit=65536)
    conn = pgwire.AsyncConn(reader, writer)
    try:
        writer.write(pgwire.startup_message(C.USER, C.DATABASE, {"application_name": app}))
        scram = None
        while True:
            mtype, body = await conn.read_message()
            if mtype == b"E":
                raise pgwire.PgError(pgwire.error_text(body))
            if mtype == b"Z":
                return conn
            if mtype != b"R":
                continue
            code = struct.unpack_from("!I", body, 0)[0]
            if code == 10:
                scram = pgwire.Scram(C.PASSWORD)
                writer.write(scram.initial_response())
            elif code == 11:
                server_first, nonce, salt, iterations = scram.parse_server_first(body[4:])
                salted = cache.map.get((C.PASSWORD, salt, iterations))
                if salted is None:  # hashlib releases the GIL
                    salted = await asyncio.to_thread(pgwire.salted_password, C.PASSWORD, salt,
                                                     iterations)
                    cache.map[(C.PASSWORD, salt, iterations)] = salted
                writer.write(scram.final_response(server_first, nonce, salted))
            elif code == 12:
                scram.check_server_final(body[4:])
            elif code != 0:
                raise pgwire.PgError(f"unexpected authentication request {code}")
    except BaseException:
        writer.close()
        raise


async def _storm(pooler, total, in_flight, settle):
    cache = pgwire.ScramCache()
    kept, refused, errors = [], {}, []
    next_login = 0

    async def lane():
        nonlocal next_login
        while next_login < total:
            next_login += 1
            try:
                kept.append(await asyncio.wait_for(_login_as_app(pooler, STORM_APP, cache), 60))
            except pgwire.PgError as e:  # refused over the cap: "FATAL 53300: ..."
                reason = str(e).split(":", 1)[0]
                refused[reason] = refused.get(reason, 0) + 1
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                refused[type(e).__name__] = refused.get(type(e).__name__, 0) + 1
            except Exception as e:  # noqa: BLE001  (a timeout: reported, not fatal)
                errors.append(f"{type(e).__name__}: {e}")

    started = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    storm_s = time.monotonic() - started
    rss_end = pooler.rss_kb()
    peak = pooler.peak_rss_kb()
    # RSS while the clients that got in stay idle: every second, the last one `settle` s after.
    series = []
    for _ in range(int(round(settle))):
        await asyncio.sleep(1)
        series.append(pooler.rss_kb())
    still_open = sum(1 for c in kept if c.is_open())
    probe_errors = []
    for conn in kept[:: max(1, len(kept) // 10)][:10]:
        try:
            if await asyncio.wait_for(conn.query("SELECT 1"), 30) != b"1":
                probe_errors.append("SELECT 1 returned something else")
        except Exception as e:  # noqa: BLE001
            probe_errors.append(f"{type(e).__name__}: {e}")
    for conn in kept:
        conn.close()
    await asyncio.sleep(0.2)
    return dict(logins=total, in_flight=in_flight, connected=len(kept), still_open=still_open,
                refused=refused, storm_s=storm_s, rss_end_kb=rss_end, peak_rss_kb=peak,
                rss_after_kb=series[-1] if series else rss_end, rss_series_kb=series,
                errors=errors, probe_errors=probe_errors)


def login_storm(pooler, total, in_flight, keep, settle=10.0):
    """`total` SCRAM logins, `in_flight` at a time, with an application_name capped at `keep`
    clients (`storm_config`): the first `keep` stay connected and idle, the rest are refused.
    Pooler RSS before, at the peak (VmHWM) and `settle` s after the last login; KiB per client
    left = (RSS after - RSS before) / clients left, to compare with the idle clients' figure."""
    warm_up(pooler)
    time.sleep(0.5)
    rss_before = pooler.rss_kb()
    pooler.reset_peak()
    out = asyncio.run(_storm(pooler, total, in_flight, settle))
    out["rss_before_kb"] = rss_before
    out["kb_per_client"] = ((out["rss_after_kb"] - rss_before) / out["connected"]
                            if out["connected"] else None)
    problems = []
    if out["connected"] < keep * 0.9:
        problems.append(f"only {out['connected']} of the {keep} capped clients got in")
    if out["errors"]:
        problems.append(f"{len(out['errors'])} logins failed otherwise, first: {out['errors'][0]}")
    if out["still_open"] != out["connected"]:
        problems.append(f"only {out['still_open']} of {out['connected']} still open")
    if out["probe_errors"]:
        problems.append(f"probe queries failed: {out['probe_errors'][0]}")
    out["error"] = "; ".join(problems)
    return out
