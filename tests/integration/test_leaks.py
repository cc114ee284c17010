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
from common import pg

LEASE_COLUMNS = ["client_id", "application_name", "user", "database", "client_addr",
                 "client_port", "backend_pid", "state", "lease_age_s", "xact_age_s", "idle_s",
                 "statements", "first_query", "last_query", "tags", "action_taken",
                 "next_action", "next_action_in_s"]
EVENT_COLUMNS = ["time", "client_id", "application_name", "action", "reason", "lease_age_s",
                 "first_query"]
USERLIST = dict(harness.USERS, postgres="")
LEAKY_QUERY = "SELECT 1 /* route='checkout',controller='cart' */"


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


def bouncer(apps=None, **settings):
    p = pg()
    base = dict(admin_users="postgres", auth_type="trust", userlist=USERLIST, leak_warn_after=2,
                databases={
                    "pgwarden_test": f"host=127.0.0.1 port={p.port} dbname=pgwarden_test",
                    "pgwarden_session": f"host=127.0.0.1 port={p.port} dbname=pgwarden_test "
                                        "pool_mode=session",
                })
    base.update(settings)
    return AppsPgwarden(p, apps=apps, **base)


def admin(pw):
    import psycopg
    return psycopg.connect(pw.dsn(user="postgres", db="pgbouncer"), autocommit=True)


def show(conn, what):
    cur = conn.execute(f"SHOW {what}")
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


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
        assert cur.fetchone() == (1,)
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


if __name__ == "__main__":
    harness.main(globals())
