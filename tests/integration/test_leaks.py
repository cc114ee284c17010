#!/usr/bin/python3
"""Leak guard: lease tracking and leak attribution (docs/leak-guard.md).

A client that leaves a transaction open past leak_warn_after shows up in SHOW LEAKS with who
it is (application_name, address and port, backend pid) and what it ran (the first statement
that is not transaction control, with its sqlcommenter tags); pgwarden logs exactly one
warning and, when the lease ends, "leak resolved". Active queries are never leaks. SHOW LEASES
lists every lease, SHOW EVENTS the recent warnings; psql and psycopg 3 both read them.
"""
import socket
import subprocess
import threading
import time

import harness
from common import admin, pg, raw_login, show

LEASE_COLUMNS = ["client_id", "application_name", "user", "database", "client_addr",
                 "client_port", "backend_pid", "state", "lease_age_s", "xact_age_s", "idle_s",
                 "statements", "first_query", "last_query", "tags", "action_taken",
                 "next_action", "next_action_in_s", "session_state", "session_state_since",
                 "session_state_query", "pinned"]
EVENT_COLUMNS = ["time", "client_id", "application_name", "action", "reason", "lease_age_s",
                 "first_query"]
APPS_COLUMNS = ["application_name", "clients", "waiting", "active", "idle_in_transaction",
                "idle_pinned", "total_xact_count", "total_query_count", "leaks", "total_leaks",
                "total_actions", "client_growth_per_min", "lease_growth_per_min", "growth_alarm",
                "max_client_conn", "max_server_conn", "apps_pattern"]
USERLIST = dict(harness.USERS, postgres="")
LEAKY_QUERY = "SELECT 42 /* route='checkout',controller='cart' */"


class AppsPgwarden(harness.Pgwarden):
    """A Pgwarden whose ini also has an [apps] section (the harness writes only the others)."""

    def __init__(self, *args, apps=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.apps = apps or {}

    def write_config(self):
        super().write_config()
        if self.apps:
            with open(self.ini, "a") as f:
                f.write("[apps]\n" + "".join(f"{k} = {v}\n" for k, v in self.apps.items()))


def bouncer(apps=None, session_pool_size=None, **settings):
    p = pg()
    session = (f"host=127.0.0.1 port={p.port} dbname=pgwarden_test pool_mode=session"
               + (f" pool_size={session_pool_size}" if session_pool_size else ""))
    base = dict(admin_users="postgres", auth_type="trust", userlist=USERLIST, leak_warn_after=2,
                databases={
                    "pgwarden_test": f"host=127.0.0.1 port={p.port} dbname=pgwarden_test",
                    "pgwarden_session": session,
                })
    base.update(settings)
    return AppsPgwarden(p, apps=apps, **base)


def app_row(conn, name):
    rows = [r for r in show(conn, "APPS") if r["application_name"] == name]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def raw_value(messages):
    """The first column of the first DataRow."""
    body = next(body for t, body in messages if t == b"D")
    return body[6:].decode()


def expect_fatal(client, sqlstate, within):
    """Reads until the connection ends; returns the ErrorResponse, which must carry sqlstate."""
    client.sock.settimeout(within)
    error = harness.first_error(client.read_until(types=(), limit=100))
    assert error is not None, f"no error within {within}s"
    assert error["C"] == sqlstate and error["S"] == "FATAL", error
    return error


def local_port(psycopg2_conn):
    sock = socket.socket(fileno=psycopg2_conn.fileno())
    try:
        return sock.getsockname()[1]
    finally:
        sock.detach()  # the fd stays psycopg2's


def row_for_port(rows, port):
    matches = [r for r in rows if r["client_port"] == port]
    assert len(matches) <= 1, matches
    return matches[0] if matches else None


def leak_lines(pw, client_id):
    return [line for line in pw.log().splitlines() if f"C-{client_id}: leak suspected" in line]


def backend_pid_of(app):
    rows = pg().sql("SELECT pid FROM pg_stat_activity WHERE application_name = "
                    f"'{app}' AND backend_type = 'client backend'")
    assert len(rows) == 1, rows
    return int(rows[0][0])


def test_idle_in_transaction_leak_is_attributed_and_resolved():
    import psycopg2
    with bouncer() as pw, admin(pw) as console:
        leaky = psycopg2.connect(pw.dsn(user="app_user", application_name="checkout-svc"))
        cur = leaky.cursor()
        cur.execute(LEAKY_QUERY)  # psycopg2 sends BEGIN first
        assert cur.fetchone() == (42,)
        idle_from = time.monotonic()
        port = local_port(leaky)

        # An active client past leak_warn_after is not a leak.
        sleeper_done = threading.Event()

        def sleeper():
            with psycopg2.connect(pw.dsn(user="app_user", application_name="sleeper")) as c:
                c.autocommit = True
                c.cursor().execute("SELECT pg_sleep(4)")
            sleeper_done.set()
        thread = threading.Thread(target=sleeper, daemon=True)
        thread.start()

        # A session-mode client holds its server while idle: idle_pinned.
        pinned = psycopg2.connect(pw.dsn(user="app_user", db="pgwarden_session",
                                         application_name="pinned-app"))
        pinned.autocommit = True
        pinned.cursor().execute("SELECT 42")
        pinned_port = local_port(pinned)

        row = harness.wait_until(lambda: row_for_port(show(console, "LEAKS"), port), timeout=3,
                                 what="the leak in SHOW LEAKS")
        assert time.monotonic() - idle_from < 3.0
        assert row["application_name"] == "checkout-svc", row
        assert row["user"] == "app_user" and row["database"] == "pgwarden_test", row
        assert row["client_addr"] == "127.0.0.1" and row["client_port"] == port, row
        assert row["backend_pid"] == backend_pid_of("checkout-svc"), row
        assert row["state"] == "idle_in_transaction", row
        assert row["first_query"] == LEAKY_QUERY, row  # not psycopg2's BEGIN
        assert row["last_query"] == LEAKY_QUERY, row
        assert row["tags"] == "route=checkout,controller=cart", row
        assert row["statements"] == 2, row  # BEGIN and the SELECT
        assert row["lease_age_s"] >= 2 and row["xact_age_s"] >= 2 and row["idle_s"] >= 2, row
        client_id = row["client_id"]

        # Exactly one warning line, with the attribution, however long the lease lasts.
        harness.wait_until(lambda: leak_lines(pw, client_id), timeout=2, what="the leak log line")
        time.sleep(1.0)
        lines = leak_lines(pw, client_id)
        assert len(lines) == 1, lines
        for part in ["app='checkout-svc'", "user=app_user", "db=pgwarden_test",
                     f"client=127.0.0.1:{port}", f"backend_pid={row['backend_pid']}",
                     "state=idle_in_transaction", "statements=2",
                     f"first_query='{LEAKY_QUERY}'", "tags='route=checkout,controller=cart'"]:
            assert part in lines[0], (part, lines[0])
        row = row_for_port(show(console, "LEAKS"), port)
        assert row["action_taken"] == "warned", row
        assert row["next_action"] == "" and row["next_action_in_s"] is None, row

        # The sleeper is past leak_warn_after but active: a lease, not a leak.
        assert not sleeper_done.is_set()
        leases = show(console, "LEASES")
        sleeping = [r for r in leases if r["application_name"] == "sleeper"]
        assert len(sleeping) == 1 and sleeping[0]["state"] == "active", leases
        assert sleeping[0]["lease_age_s"] >= 2 and sleeping[0]["idle_s"] is None, sleeping
        assert sleeping[0]["first_query"] == "SELECT pg_sleep(4)", sleeping
        assert not [r for r in show(console, "LEAKS") if r["application_name"] == "sleeper"]
        assert not [ln for ln in pw.log().splitlines() if "leak suspected: app='sleeper'" in ln]

        # SHOW LEASES lists all leases, the session-mode one included.
        pinned_row = row_for_port(leases, pinned_port)
        assert pinned_row and pinned_row["state"] == "idle_pinned", leases
        assert pinned_row["database"] == "pgwarden_session", pinned_row
        assert pinned_row["first_query"] == "SELECT 42" and pinned_row["xact_age_s"] is None
        assert row_for_port(leases, port)["state"] == "idle_in_transaction"

        events = show(console, "EVENTS")
        warning = [e for e in events if e["client_id"] == client_id]
        assert warning and warning[0]["action"] == "leak_warning", events
        assert warning[0]["application_name"] == "checkout-svc", warning
        assert warning[0]["first_query"] == LEAKY_QUERY and warning[0]["lease_age_s"] >= 2
        assert "idle_in_transaction" in warning[0]["reason"], warning

        # The client commits: the lease ends, the leak is resolved.
        leaky.commit()
        harness.wait_until(lambda: f"C-{client_id}: leak resolved after" in pw.log(), timeout=2,
                           what="leak resolved")
        assert row_for_port(show(console, "LEAKS"), port) is None
        assert row_for_port(show(console, "LEASES"), port) is None
        assert show(console, "EVENTS")[0]["action"] == "leak_resolved"
        assert len(leak_lines(pw, client_id)) == 1

        # The same client's next lease starts from scratch.
        cur.execute("SELECT 2")
        cur.fetchone()
        fresh = harness.wait_until(lambda: row_for_port(show(console, "LEASES"), port),
                                   timeout=2, what="the new lease")
        assert fresh["first_query"] == "SELECT 2" and fresh["action_taken"] == "", fresh
        assert fresh["statements"] == 2 and fresh["tags"] == "", fresh
        leaky.close()
        pinned.close()
        thread.join(10)
        assert sleeper_done.is_set()


def test_disconnect_resolves_and_console_works_from_psql():
    import psycopg
    with bouncer() as pw, admin(pw) as console:
        # psycopg 3: BEGIN, then the query through Parse/Bind/Execute; a leading comment with
        # URL-encoded values.
        leaky = psycopg.connect(pw.dsn(user="app_user", application_name="orders-api"))
        leaky.execute("/* route='%%2Forders%%2F42',file='orders.py%%3A17' */ SELECT %s::int", (7,))
        sock = socket.socket(fileno=leaky.pgconn.socket)
        port = sock.getsockname()[1]
        sock.detach()
        row = harness.wait_until(lambda: row_for_port(show(console, "LEAKS"), port), timeout=3,
                                 what="the leak")
        assert row["first_query"].startswith("/* route='%2Forders%2F42'"), row
        assert row["first_query"].endswith("SELECT $1::int"), row
        assert row["tags"] == "route=/orders/42,file=orders.py:17", row
        client_id = row["client_id"]
        # The janitor (every 200 ms) logs the warning and records the event.
        harness.wait_until(lambda: leak_lines(pw, client_id), timeout=2, what="the leak log line")

        # psql (simple protocol): the same columns and the row.
        out = harness.run(["psql", "-X", "-A", "-F", "|", "-d",
                           pw.dsn(user="postgres", db="pgbouncer"), "-c", "SHOW LEAKS"]).stdout
        lines = out.splitlines()
        assert lines[0].split("|") == LEASE_COLUMNS, lines[0]
        mine = [ln for ln in lines[1:] if ln.startswith(f"{client_id}|orders-api|")]
        assert len(mine) == 1 and "|idle_in_transaction|" in mine[0], out
        out = harness.run(["psql", "-X", "-A", "-F", "|", "-d",
                           pw.dsn(user="postgres", db="pgbouncer"), "-c", "SHOW EVENTS"]).stdout
        assert out.splitlines()[0].split("|") == EVENT_COLUMNS, out
        assert f"|{client_id}|orders-api|leak_warning|" in out, out
        out = harness.run(["psql", "-X", "-A", "-F", "|", "-d",
                           pw.dsn(user="postgres", db="pgbouncer"), "-c", "SHOW LEASES"]).stdout
        assert out.splitlines()[0].split("|") == LEASE_COLUMNS, out
        out = harness.run(["psql", "-X", "-d", pw.dsn(user="postgres", db="pgbouncer"),
                           "-c", "SHOW HELP"]).stderr
        assert "SHOW LEASES|LEAKS|EVENTS" in out and "CANCEL_CLIENT" in out, out

        # The client goes away without committing: cleanup rolls back, the leak is resolved.
        leaky.close()
        harness.wait_until(lambda: f"C-{client_id}: leak resolved after" in pw.log(), timeout=3,
                           what="leak resolved on disconnect")
        assert row_for_port(show(console, "LEAKS"), port) is None
        resolved = [e for e in show(console, "EVENTS") if e["client_id"] == client_id]
        assert [e["action"] for e in resolved] == ["leak_resolved", "leak_warning"], resolved


def test_threshold_off_set_at_runtime_and_per_app():
    import psycopg2
    apps = {"batch-*": "leak_warn_after=0", "fast-*": "leak_warn_after=1"}
    with bouncer(apps=apps, leak_warn_after=0) as pw, admin(pw) as console:
        assert {r["key"]: r["value"] for r in show(console, "CONFIG")}["leak_warn_after"] == "0"
        conns = {}
        for app in ("web", "batch-nightly", "fast-api"):
            conn = psycopg2.connect(pw.dsn(user="app_user", application_name=app))
            conn.cursor().execute("SELECT 1")
            conns[app] = local_port(conn), conn
        # fast-* has its own threshold (1 s); the others are off.
        harness.wait_until(lambda: row_for_port(show(console, "LEAKS"), conns["fast-api"][0]),
                           timeout=3, what="the per-app leak")
        time.sleep(1.0)
        assert [r["application_name"] for r in show(console, "LEAKS")] == ["fast-api"]
        leases = show(console, "LEASES")
        web = row_for_port(leases, conns["web"][0])
        assert web["next_action"] == "" and web["next_action_in_s"] is None, web
        # Turned on at runtime for everyone without an [apps] override.
        console.execute("SET leak_warn_after = 1")
        assert {r["key"]: r["value"] for r in show(console, "CONFIG")}["leak_warn_after"] == "1"
        harness.wait_until(lambda: row_for_port(show(console, "LEAKS"), conns["web"][0]),
                           timeout=2, what="the leak after SET")
        harness.wait_until(lambda: "leak suspected: app='web'" in pw.log(), timeout=2,
                           what="the web leak line")
        assert not row_for_port(show(console, "LEAKS"), conns["batch-nightly"][0])
        assert "app='batch-nightly'" not in pw.log()
        # SET idle_transaction_timeout: the next action is the disconnect, with seconds left.
        console.execute("SET idle_transaction_timeout = 30")
        row = row_for_port(show(console, "LEAKS"), conns["web"][0])
        assert row["next_action"] == "disconnect (idle_transaction_timeout)", row
        assert 25 <= row["next_action_in_s"] <= 30, row
        for port, conn in conns.values():
            conn.close()


def test_cancel_client():
    import psycopg
    import psycopg2
    with bouncer() as pw, admin(pw) as console:
        errors = []

        def run():
            conn = psycopg2.connect(pw.dsn(user="app_user", application_name="slow-report"))
            try:
                conn.cursor().execute("SELECT pg_sleep(20)")
            except psycopg2.Error as e:
                errors.append(e.pgcode)
            conn.close()
        thread = threading.Thread(target=run, daemon=True)
        started = time.monotonic()
        thread.start()
        row = harness.wait_until(
            lambda: [r for r in show(console, "LEASES") if r["application_name"] == "slow-report"
                     and r["state"] == "active" and r["statements"] == 2],
            timeout=5, what="the running query")[0]
        console.execute(f"CANCEL_CLIENT {row['client_id']}")
        thread.join(10)
        assert errors == ["57014"], errors
        assert time.monotonic() - started < 10
        events = show(console, "EVENTS")
        assert events[0]["action"] == "cancel" and events[0]["client_id"] == row["client_id"]
        assert events[0]["reason"] == "CANCEL_CLIENT by postgres", events[0]
        assert app_row(console, "slow-report")["total_actions"] == 1
        try:
            console.execute("CANCEL_CLIENT 999999")
            raise AssertionError("no error")
        except psycopg.Error as e:
            assert e.diag.sqlstate == "42704", e


def _refusal(pw, application_name):
    """The PostgresError a login as `application_name` gets (asyncpg exposes SQLSTATE and
    DETAIL of a login failure), or None when it gets in."""
    import asyncio
    import asyncpg

    async def attempt():
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=pw.port, user="app_user",
                                         database="pgwarden_test", timeout=10,
                                         server_settings={"application_name": application_name})
            await conn.close()
            return None
        except asyncpg.PostgresError as e:
            return e
    return asyncio.run(attempt())


def test_per_app_max_client_conn():
    import psycopg
    with bouncer(apps={"app_a": "max_client_conn=5", "batch-*": "max_client_conn=1"}) as pw:
        held = [psycopg.connect(pw.dsn(), application_name="app_a") for _ in range(5)]
        try:
            error = _refusal(pw, "app_a")
            assert error is not None, "the sixth app_a connection was accepted"
            assert error.sqlstate == "53300", error
            assert 'application "app_a"' in str(error) and "max_client_conn" in str(error), error
            assert "limited to 5 client connections" in error.detail, error.detail
            assert "[apps]" in error.detail, error.detail
            # Another application still gets in; a glob line caps each matching name.
            assert _refusal(pw, "app_b") is None
            with psycopg.connect(pw.dsn(), application_name="batch-nightly"):
                error = _refusal(pw, "batch-nightly")
                assert error is not None and error.sqlstate == "53300", error
                assert _refusal(pw, "batch-hourly") is None
            # A slot freed by a disconnect is available again, even after SET application_name.
            held[0].execute("SET application_name = 'renamed'")
            held.pop(0).close()
            harness.wait_until(lambda: _refusal(pw, "app_a") is None, 5, what="a freed app_a slot")
        finally:
            for conn in held:
                conn.close()


def test_per_app_max_server_conn():
    """[apps] max_server_conn is the application's share of each pool: its clients queue for
    their share while another application keeps getting servers."""
    import psycopg
    with bouncer(apps={"greedy": "max_server_conn=2"}, default_pool_size=6) as pw:
        stop = threading.Event()
        done = {"greedy": 0, "polite": 0}
        errors = []

        def client(app, sql):
            try:
                with psycopg.connect(pw.dsn(), application_name=app, autocommit=True,
                                     prepare_threshold=None) as conn:
                    while not stop.is_set():
                        conn.execute(sql)
                        done[app] += 1
            except Exception as e:  # noqa: BLE001
                errors.append(f"{app}: {e!r}")

        threads = [threading.Thread(target=client, args=("greedy", "SELECT pg_sleep(0.2)"))
                   for _ in range(6)]
        threads += [threading.Thread(target=client, args=("polite", "SELECT 1"))
                    for _ in range(2)]
        for t in threads:
            t.start()
        peak = 0
        polite_before = done["polite"]
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                rows = pg().sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                "'greedy' AND state = 'active'")
                peak = max(peak, int(rows[0][0]))
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert not errors, errors
        # Six greedy clients, two servers for them at a time; all of them got their turns.
        assert peak == 2, f"greedy held {peak} servers at once (cap 2)"
        assert done["greedy"] >= 6, done
        # The other application was never starved: it ran queries the whole time.
        assert done["polite"] - polite_before > 100, done


def test_idle_transaction_timeout_per_app():
    # [apps] lines set their own idle_transaction_timeout: the global 1 s disconnects "hasty",
    # "patient" has 60 s. The disconnect is a forced action in SHOW EVENTS and SHOW APPS.
    with bouncer(apps={"patient": "idle_transaction_timeout=60"}, idle_transaction_timeout=1,
                 leak_warn_after=0) as pw, admin(pw) as console:
        hasty = raw_login(pw, "hasty")
        patient = raw_login(pw, "patient")
        for client in (hasty, patient):
            client.query("BEGIN")
            assert client.query("SELECT 1")[-1] == (b"Z", b"T")
        error = expect_fatal(hasty, "25P03", within=5)
        assert "idle-in-transaction timeout" in error["M"], error
        assert patient.query("SELECT 2")[-1] == (b"Z", b"T")  # still in its transaction
        row = [r for r in show(console, "LEASES") if r["application_name"] == "patient"][0]
        assert row["next_action"] == "disconnect (idle_transaction_timeout)", row
        assert 55 <= row["next_action_in_s"] <= 60, row
        events = [e for e in show(console, "EVENTS") if e["application_name"] == "hasty"]
        assert events and events[0]["action"] == "disconnect", events
        assert events[0]["reason"] == "idle_transaction_timeout (1s)", events
        assert app_row(console, "hasty")["total_actions"] == 1
        assert app_row(console, "patient")["total_actions"] == 0
        patient.close()


def test_idle_pinned_timeout_returns_the_server_reset():
    # Session mode, one server: a client that sits on it gets 57P05; its server is reset
    # (DISCARD ALL) and the next client gets the same backend.
    with bouncer(apps={"batch-*": "idle_pinned_timeout=0"}, idle_pinned_timeout=1,
                 leak_warn_after=0, session_pool_size=1) as pw, admin(pw) as console:
        sitter = raw_login(pw, "sitter", db="pgwarden_session")
        pid = raw_value(sitter.query("SELECT pg_backend_pid()"))
        assert sitter.query("CREATE TEMP TABLE pinned_state (x int)")[-1] == (b"Z", b"I")
        row = [r for r in show(console, "LEASES") if r["application_name"] == "sitter"][0]
        assert row["state"] == "idle_pinned", row
        assert row["next_action"] == "disconnect (idle_pinned_timeout)", row
        started = time.monotonic()
        error = expect_fatal(sitter, "57P05", within=5)
        assert time.monotonic() - started < 4
        assert "idle_pinned_timeout" in error["M"] and "idle-session timeout" in error["M"], error
        assert "idle_pinned_timeout" in pw.log()
        nxt = raw_login(pw, "next", db="pgwarden_session")
        assert raw_value(nxt.query("SELECT pg_backend_pid()")) == pid  # reused, not closed
        assert raw_value(nxt.query("SELECT count(*) FROM pg_class WHERE relname = 'pinned_state'")) == "0"
        nxt.close()
        events = [e for e in show(console, "EVENTS") if e["application_name"] == "sitter"]
        assert events[0]["action"] == "disconnect", events
        assert events[0]["reason"] == "idle_pinned_timeout (1s)", events
        assert events[0]["first_query"] == "SELECT pg_backend_pid()", events
        # An [apps] line can turn it off: this one keeps its server.
        batch = raw_login(pw, "batch-nightly", db="pgwarden_session")
        batch.query("SELECT 1")
        time.sleep(2.0)
        assert batch.query("SELECT 3")[-1] == (b"Z", b"I")
        batch.close()


def test_show_apps_rows_counters_and_pool_health():
    import psycopg2
    apps = {"checkout-*": "max_client_conn=50 max_server_conn=3", "report": "leak_warn_after=60"}
    with bouncer(apps=apps, leak_warn_after=1, stats_period=1,
                 leak_growth_interval=0.25) as pw, admin(pw) as console:
        worker = raw_login(pw, "checkout-svc")
        for _ in range(3):
            worker.query("SELECT 1")
        for sql in ("BEGIN", "SELECT 1", "COMMIT"):
            worker.query(sql)
        # 6 queries (ReadyForQuery messages), 4 transactions (ReadyForQuery back to idle).
        row = app_row(console, "checkout-svc")
        assert row["clients"] == 1 and row["total_query_count"] == 6, row
        assert row["total_xact_count"] == 4, row
        assert row["max_client_conn"] == 50 and row["max_server_conn"] == 3, row
        assert row["apps_pattern"] == "checkout-*", row
        assert row["leaks"] == 0 and row["total_leaks"] == 0 and row["growth_alarm"] == "", row

        # A leak and a second client: the states and the leak show up.
        leaky = psycopg2.connect(pw.dsn(user="app_user", application_name="checkout-svc"))
        leaky.cursor().execute("SELECT 1")  # psycopg2: BEGIN, then the query
        harness.wait_until(lambda: app_row(console, "checkout-svc")["leaks"] == 1, 3,
                           what="the leak in SHOW APPS")
        row = app_row(console, "checkout-svc")
        assert row["clients"] == 2 and row["idle_in_transaction"] == 1, row
        assert row["active"] == 0 and row["idle_pinned"] == 0 and row["waiting"] == 0, row
        harness.wait_until(lambda: app_row(console, "checkout-svc")["total_leaks"] == 1, 3)
        other = app_row(console, "report")
        assert other is None  # no client of it yet

        # Pool health: one line per pool every stats_period, with the leak and its age.
        def health_with_leak():
            return [ln for ln in pw.log().splitlines()
                    if "pool health: pgwarden_test/app_user: clients active=2 waiting=0" in ln
                    and "suspected leaks=1" in ln and "oldest transaction=-" not in ln]
        harness.wait_until(health_with_leak, 5, what="a pool health line with the leak")
        line = health_with_leak()[-1]
        assert "servers active=1 " in line, line

        # Totals survive the clients; psql reads SHOW APPS too (simple protocol).
        leaky.rollback()
        leaky.close()
        worker.close()
        harness.wait_until(lambda: app_row(console, "checkout-svc")["clients"] == 0, 3)
        row = app_row(console, "checkout-svc")
        # psycopg2's BEGIN, SELECT and ROLLBACK: 3 more queries, 1 more transaction.
        assert row["total_query_count"] == 9 and row["total_xact_count"] == 5, row
        out = harness.run(["psql", "-X", "-A", "-F", "|", "-d",
                           pw.dsn(user="postgres", db="pgbouncer"), "-c", "SHOW APPS"]).stdout
        lines = out.splitlines()
        assert lines[0].split("|") == APPS_COLUMNS, lines[0]
        mine = [ln.split("|") for ln in lines[1:] if ln.startswith("checkout-svc|")]
        assert len(mine) == 1 and mine[0][6:10] == ["5", "9", "0", "1"], out


def test_kill_app_disconnects_exactly_that_app():
    import psycopg
    with bouncer(leak_warn_after=0) as pw, admin(pw) as console:
        victims = [raw_login(pw, "victim") for _ in range(2)]
        victims[0].query("BEGIN")
        victim_pid = raw_value(victims[0].query("SELECT pg_backend_pid()"))
        bystanders = [psycopg.connect(pw.dsn(user="app_user", application_name="bystander"),
                                      autocommit=True) for _ in range(2)]
        for conn in bystanders:
            conn.execute("SELECT 1")
        console.execute("KILL_APP victim")
        for client in victims:
            error = expect_fatal(client, "57P01", within=5)
            assert "administrator command" in error["M"], error
        for conn in bystanders:
            assert conn.execute("SELECT 2").fetchone() == (2,)
        # The victim's server is rolled back and returned, not closed.
        harness.wait_until(lambda: pg().sql("SELECT state FROM pg_stat_activity WHERE pid = "
                                            + victim_pid) == [["idle"]], 5,
                           what="the victim's server to be idle in the pool")
        harness.wait_until(lambda: app_row(console, "victim")["clients"] == 0, 3)
        assert app_row(console, "victim")["total_actions"] == 2
        assert app_row(console, "bystander")["clients"] == 2
        events = [e for e in show(console, "EVENTS") if e["application_name"] == "victim"]
        assert [e["action"] for e in events] == ["disconnect", "disconnect"], events
        assert all(e["reason"] == "KILL_APP by postgres" for e in events), events
        # Unknown application: an error, the console goes on. psql (simple protocol) works too.
        try:
            console.execute("KILL_APP nobody")
            raise AssertionError("KILL_APP of an unknown application accepted")
        except psycopg.errors.UndefinedObject as e:
            assert 'application_name "nobody"' in str(e), e
        out = harness.run(["psql", "-X", "-d", pw.dsn(user="postgres", db="pgbouncer"),
                           "-c", "KILL_APP bystander"]).stdout
        assert "KILL_APP" in out, out
        for conn in bystanders:
            try:
                conn.execute("SELECT 3")
                raise AssertionError("bystander survived KILL_APP bystander")
            except psycopg.OperationalError as e:
                assert "administrator command" in str(e) or "closed" in str(e), e
            conn.close()


def test_growth_alarm_fires_for_idle_growth_only():
    import psycopg
    with bouncer(leak_warn_after=0, leak_growth_window=4, leak_growth_interval=0.25) as pw, \
            admin(pw) as console:
        stop = threading.Event()
        failures = []

        # A steady busy population: 4 clients running queries the whole time.
        def busy():
            try:
                # Transaction pooling: no server-side prepared statements.
                with psycopg.connect(pw.dsn(user="app_user", application_name="busy"),
                                     autocommit=True, prepare_threshold=None) as conn:
                    while not stop.is_set():
                        conn.execute("SELECT 1")
                        time.sleep(0.01)
            except Exception as e:  # reported below, not swallowed
                failures.append(e)
        threads = [threading.Thread(target=busy, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        harness.wait_until(lambda: (app_row(console, "busy") or {}).get("clients") == 4, 5)

        # A population that grows steadily and stays idle: a connection leak.
        leaked = []
        def alarm_lines():
            return [ln for ln in pw.log().splitlines() if "connections of leaky growing by" in ln]
        deadline = time.monotonic() + 20
        while not alarm_lines() and time.monotonic() < deadline:
            leaked.append(psycopg.connect(pw.dsn(user="app_user", application_name="leaky")))
            time.sleep(0.25)
        lines = alarm_lines()
        assert lines, "no growth alarm"
        assert "suspected leak" in lines[0] and "client connections" in lines[0], lines[0]
        row = app_row(console, "leaky")
        assert row["growth_alarm"] == "clients" and row["client_growth_per_min"] > 0, row
        # Still growing for another window: still one warning.
        for _ in range(20):
            leaked.append(psycopg.connect(pw.dsn(user="app_user", application_name="leaky")))
            time.sleep(0.25)
        assert len(alarm_lines()) == 1, alarm_lines()
        events = [e for e in show(console, "EVENTS") if e["action"] == "growth_alarm"]
        assert [e["application_name"] for e in events] == ["leaky"], events
        assert events[0]["client_id"] is None, events

        stop.set()
        for thread in threads:
            thread.join(10)
        assert not failures, failures
        busy_row = app_row(console, "busy")
        assert busy_row["growth_alarm"] == "" and busy_row["total_query_count"] > 0, busy_row
        assert "connections of busy" not in pw.log()
        for conn in leaked:
            conn.close()



# --- first_query is the application's statement, whatever the driver sends around it --------

def _asyncpg_leak(pw, db, app, codec_inside, holding, release):
    """asyncpg registers a jsonb codec (its type introspection: a SELECT from pg_type), then
    runs a tagged statement in a transaction it leaves open until `release` is set."""
    import asyncio
    import json
    import asyncpg

    async def run():
        conn = await asyncpg.connect(host="127.0.0.1", port=pw.port, user="app_user",
                                     database=db, statement_cache_size=0,
                                     server_settings={"application_name": app})
        if not codec_inside:  # as a pool's init= callback does, before any transaction
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                                      schema="pg_catalog")
        tr = conn.transaction()
        await tr.start()
        if codec_inside:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                                      schema="pg_catalog")
        value = await conn.fetchval(
            "SELECT $1::jsonb ->> 'status' /* route='/api/status',framework='asyncpg' */",
            {"status": "ok"})
        assert value == "ok", value
        holding.set()
        while not release.is_set():
            await asyncio.sleep(0.05)
        await tr.rollback()
        await conn.close()
    asyncio.run(run())


def _sqlalchemy_async_leak(pw, app, holding, release):
    """SQLAlchemy's asyncio engine over asyncpg: at connect it reads version(),
    current_schema(), two SHOWs and registers json codecs, then the application's statement."""
    import asyncio
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    async def run():
        engine = create_async_engine(
            f"postgresql+asyncpg://app_user@127.0.0.1:{pw.port}/pgwarden_session",
            connect_args={"server_settings": {"application_name": app}}, poolclass=NullPool)
        async with engine.connect() as conn:
            result = await conn.execute(text(
                "SELECT count(*) FROM pg_class /* route='/reports',framework='sqlalchemy' */"))
            assert result.scalar() > 0
            holding.set()
            while not release.is_set():
                await asyncio.sleep(0.05)
            await conn.rollback()
        await engine.dispose()
    asyncio.run(run())


def _psycopg3_leak(pw, app, holding, release):
    """psycopg 3: BEGIN, a SAVEPOINT for the nested transaction(), two statements whose tags
    differ (SHOW LEAKS shows their union)."""
    import psycopg
    with psycopg.connect(pw.dsn(user="app_user"), application_name=app) as conn:
        with conn.transaction(), conn.transaction():
            conn.execute("SELECT %s::text /* route='/cart',step='read' */", ("x",))
            conn.execute("SELECT %s::int /* route='/cart',step='write' */", (1,))
            holding.set()
            release.wait(30)


def test_first_query_and_tags_are_the_applications_for_each_driver():
    import os
    drivers = {  # application_name -> (first_query, tags)
        "asyncpg-session": ("SELECT $1::jsonb ->> 'status' /* route='/api/status',"
                            "framework='asyncpg' */", "route=/api/status,framework=asyncpg"),
        "asyncpg-txn": ("SELECT $1::jsonb ->> 'status' /* route='/api/status',"
                        "framework='asyncpg' */", "route=/api/status,framework=asyncpg"),
        "sqlalchemy-async": ("SELECT count(*) FROM pg_class /* route='/reports',"
                             "framework='sqlalchemy' */", "route=/reports,framework=sqlalchemy"),
        "psycopg3-app": ("SELECT $1::text /* route='/cart',step='read' */",
                         "route=/cart,step=read,step=write"),
        "node-app": ("SELECT $1::int AS id /* route='/api/orders',framework='express' */",
                     "route=/api/orders,framework=express,step=count"),
    }
    with bouncer(leak_warn_after=1) as pw:
        release = threading.Event()
        holding = {name: threading.Event() for name in drivers if name != "node-app"}
        errors = []

        def guarded(name, fn, *args):
            try:
                fn(pw, *args, holding[name], release)
            except Exception as e:  # reported by the main thread
                errors.append(f"{name}: {e!r}")
                holding[name].set()

        threads = [threading.Thread(target=guarded, args=args) for args in (
            ("asyncpg-session", _asyncpg_leak, "pgwarden_session", "asyncpg-session", False),
            ("asyncpg-txn", _asyncpg_leak, "pgwarden_test", "asyncpg-txn", True),
            ("sqlalchemy-async", _sqlalchemy_async_leak, "sqlalchemy-async"),
            ("psycopg3-app", _psycopg3_leak, "psycopg3-app"),
        )]
        for t in threads:
            t.start()
        here = os.path.dirname(os.path.abspath(__file__))
        node = subprocess.Popen(
            ["node", os.path.join(here, "node", "leak.js")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PGW_URL=pw.url(user="app_user") + "?application_name=node-app",
                     NODE_PATH=os.path.join(here, "node_modules")))
        try:
            assert node.stdout.readline().strip() == "holding", node.stderr.read()
            for name, event in holding.items():
                assert event.wait(30), f"{name} never got to hold its transaction"
            assert not errors, errors
            time.sleep(1.5)  # past leak_warn_after
            with admin(pw) as console:
                leaks = {r["application_name"]: r for r in show(console, "LEAKS")}
            for name, (first_query, tags) in drivers.items():
                row = leaks.get(name)
                assert row is not None, (name, sorted(leaks))
                assert row["first_query"] == first_query, (name, row)
                assert row["tags"] == tags, (name, row)
                assert row["statements"] >= 2, (name, row)
            # psycopg 3: BEGIN, SAVEPOINT and its two statements; the last one is shown too.
            assert leaks["psycopg3-app"]["statements"] == 4, leaks["psycopg3-app"]
            assert leaks["psycopg3-app"]["last_query"] == \
                "SELECT $1::int /* route='/cart',step='write' */", leaks["psycopg3-app"]
        finally:
            release.set()
            node.stdin.close()
            node.wait(30)
            for t in threads:
                t.join(30)
        assert not errors, errors


if __name__ == "__main__":
    harness.main(globals())
