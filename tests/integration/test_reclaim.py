#!/usr/bin/python3
"""Leak guard: reclaim under pressure (docs/leak-guard.md#reclaim-under-pressure).

While clients wait for a server of a pool, a lease of that pool idle in a transaction past
reclaim_under_pressure_after is ended (FATAL 25P03 with a DETAIL saying how many clients were
waiting), rolled back, and its server goes to the oldest waiting client. Without waiters, or
with the key off (the default), nothing changes. The load test is the seed report's
psycopg2 ThreadedConnectionPool application that leaks one request in ten.
"""
import random
import threading
import time

import harness
from common import admin, pg, raw_login, show

USERLIST = dict(harness.USERS, postgres="")


def bouncer(**settings):
    p = pg()
    base = dict(admin_users="postgres", auth_type="trust", userlist=USERLIST,
                pool_mode="transaction", default_pool_size=1, leak_warn_after=1,
                databases={"pgwarden_test": f"host=127.0.0.1 port={p.port} dbname=pgwarden_test"})
    base.update(settings)
    return harness.Pgwarden(p, **base)


def idle_in_transaction(pw, sql="SELECT 1"):
    """A raw client "leaky" left idle inside a transaction, and since when."""
    leaky = raw_login(pw, "leaky")
    assert leaky.query("BEGIN")[-1] == (b"Z", b"T")
    assert leaky.query(sql)[-1] == (b"Z", b"T")
    return leaky, time.monotonic()


def client_ids(console):
    return {r["application_name"]: r["client_id"] for r in show(console, "LEASES")}


def test_an_idle_transaction_is_reclaimed_for_a_waiting_client():
    with bouncer(reclaim_under_pressure_after=2) as pw, admin(pw) as console:
        leaky, idle_from = idle_in_transaction(pw, "SELECT 42 /* route='/slow' */")
        leaky_id = client_ids(console)["leaky"]
        # Nobody waits: the lease is a suspected leak, not reclaimed.
        time.sleep(2.6)
        leaks = show(console, "LEAKS")
        assert [r["client_id"] for r in leaks] == [leaky_id], leaks
        assert leaks[0]["action_taken"] == "warned", leaks
        # A client waits for the pool's only server: the idle transaction goes, at once since
        # it is already past the threshold.
        waiter = raw_login(pw, "polite")
        waited_from = time.monotonic()
        waiter.send_query("SELECT 7")
        leaky.sock.settimeout(5)
        error = harness.first_error(leaky.read_until(types=(), limit=100))
        assert error is not None and (error["S"], error["C"]) == ("FATAL", "25P03"), error
        assert "reclaimed under pressure" in error["M"], error
        assert "while 1 clients were waiting" in error["D"], error
        assert error["H"].startswith("Commit or roll back"), error
        assert time.monotonic() - idle_from >= 2
        messages = waiter.read_until()
        assert (b"Z", b"I") == messages[-1], messages
        assert time.monotonic() - waited_from < 1.0  # the janitor's round is 200 ms
        # The transaction was rolled back, and the event names the action.
        events = [e for e in show(console, "EVENTS")
                  if e["client_id"] == leaky_id and e["action"] == "reclaimed_under_pressure"]
        assert len(events) == 1, show(console, "EVENTS")
        assert "1 clients were waiting" in events[0]["reason"], events
        assert "reclaimed under pressure" in pw.log()
        apps = {r["application_name"]: r for r in show(console, "APPS")}
        assert apps["leaky"]["total_actions"] == 1, apps["leaky"]
        assert waiter.query("SELECT 8")[-1] == (b"Z", b"I")
        waiter.close()
        leaky.close()


def test_a_young_idle_transaction_is_reclaimed_only_once_past_the_threshold():
    with bouncer(reclaim_under_pressure_after=2, idle_transaction_timeout=0) as pw:
        leaky, idle_from = idle_in_transaction(pw)
        waiter = raw_login(pw, "polite")
        waiter.send_query("SELECT 7")
        messages = waiter.read_until()
        waited = time.monotonic() - idle_from
        assert messages[-1] == (b"Z", b"I"), messages
        assert 2.0 <= waited < 2.0 + 0.5, waited  # past 2 s, then the next janitor round
        leaky.sock.settimeout(2)
        error = harness.first_error(leaky.read_until(types=(), limit=100))
        assert error is not None and error["C"] == "25P03", error
        waiter.close()
        leaky.close()


def test_with_the_key_off_an_idle_transaction_is_left_to_idle_transaction_timeout():
    with bouncer(idle_transaction_timeout=3) as pw, admin(pw) as console:
        leaky, idle_from = idle_in_transaction(pw)
        waiter = raw_login(pw, "polite")
        waiter.send_query("SELECT 7")
        leaky.sock.settimeout(6)
        error = harness.first_error(leaky.read_until(types=(), limit=100))
        assert error is not None and error["C"] == "25P03", error
        assert "reclaimed" not in error["M"], error  # idle_transaction_timeout's own
        assert time.monotonic() - idle_from >= 3
        assert waiter.read_until()[-1] == (b"Z", b"I")
        assert not [e for e in show(console, "EVENTS") if e["action"] == "reclaimed_under_pressure"]
        waiter.close()
        leaky.close()


def run_leaky_threaded_pool(pw, seconds, threads=200, leak_share=0.10, seed=11):
    """The seed report's application: psycopg2's ThreadedConnectionPool, `threads` request
    threads, one request in ten leaks its transaction (the connection is never put back).
    Returns the latencies of the well-behaved requests and their failures."""
    import psycopg2
    import psycopg2.pool
    app_pool = psycopg2.pool.ThreadedConnectionPool(
        0, 2000, pw.dsn(user="app_user", application_name="threaded-app"))
    latencies, failures, leaked = [], [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(n):
        rng = random.Random(seed * 1000 + n)
        # The first requests come at the rate of the later ones (about 25 a second): a burst of
        # 200 at once would queue behind any pool of 10, leaks or not.
        time.sleep(rng.uniform(0, 8))
        while time.monotonic() < stop_at:
            leak = rng.random() < leak_share
            start = time.monotonic()
            try:
                conn = app_pool.getconn()
                cur = conn.cursor()
                cur.execute("SELECT count(*) FROM pg_class WHERE relkind = %s", ("r",))
                cur.fetchone()
                if leak:
                    with lock:
                        leaked.append(conn)  # never committed, never put back
                else:
                    conn.commit()
                    app_pool.putconn(conn)
                    with lock:
                        latencies.append(time.monotonic() - start)
            except Exception as e:
                with lock:
                    failures.append(repr(e))
            time.sleep(rng.uniform(4, 12))  # about 25 requests/s from 200 threads

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(seconds + 60)
    for conn in leaked:
        try:
            conn.close()
        except Exception:
            pass
    app_pool.closeall()
    return sorted(latencies), failures, len(leaked)


def p99(values):
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def test_a_leaking_threaded_pool_keeps_its_p99_under_the_threshold():
    settings = dict(default_pool_size=10, idle_transaction_timeout=10, max_client_conn=2000)
    with bouncer(reclaim_under_pressure_after=2, **settings) as pw, admin(pw) as console:
        latencies, failures, leaked = run_leaky_threaded_pool(pw, seconds=24)
        reclaimed = [e for e in show(console, "EVENTS")
                     if e["action"] == "reclaimed_under_pressure"]
    print(f"reclaim on: {len(latencies)} requests, {leaked} leaked, {len(reclaimed)} reclaimed, "
          f"p50 {latencies[len(latencies) // 2]:.3f}s p99 {p99(latencies):.3f}s "
          f"max {latencies[-1]:.3f}s", flush=True)
    assert not failures, failures[:5]
    assert len(latencies) > 300 and leaked > 30, (len(latencies), leaked)
    assert reclaimed, "nothing was reclaimed"
    # 2 s, plus the workload's own query (milliseconds) and the janitor's 200 ms round.
    assert p99(latencies) < 2.0 + 0.25, p99(latencies)

    # The same application with the key off: leaks hold their servers for the whole
    # idle_transaction_timeout, and well-behaved requests wait behind them.
    with bouncer(**settings) as pw, admin(pw) as console:
        latencies, failures, leaked = run_leaky_threaded_pool(pw, seconds=12)
        reclaimed = [e for e in show(console, "EVENTS")
                     if e["action"] == "reclaimed_under_pressure"]
    print(f"reclaim off: {len(latencies)} requests, {leaked} leaked, p50 "
          f"{latencies[len(latencies) // 2]:.3f}s p99 {p99(latencies):.3f}s", flush=True)
    assert not failures, failures[:5]
    assert not reclaimed
    assert p99(latencies) > 4.0, p99(latencies)


if __name__ == "__main__":
    harness.main(globals())
