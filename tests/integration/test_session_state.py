#!/usr/bin/python3
"""Session state in transaction pooling (docs/transaction-pooling.md#session-state): SETs kept
per client and re-applied, never seen by another client on the same backend; advisory locks,
LISTEN and temp tables pin the client and are removed before the server is reused;
session_state = pin, reject and allow; the console's attribution, SHOW EVENTS and the log."""
import select
import threading
import time

import harness
from common import pg, show, admin, raw_login
from test_leaks import AppsPgwarden, USERLIST


def bouncer(apps=None, **settings):
    p = pg()
    base = dict(admin_users="postgres", auth_type="trust", userlist=USERLIST,
                default_pool_size=1, pool_mode="transaction")
    base.update(settings)
    return AppsPgwarden(p, apps=apps, **base)


def connect(pw, app="app", db="pgwarden_test"):
    import psycopg
    return psycopg.connect(pw.dsn(user="app_user", db=db, application_name=app), autocommit=True)


def one(conn, sql, params=None, prepare=None):
    return conn.execute(sql, params, prepare=prepare).fetchone()


def client_row(console, app):
    rows = [r for r in show(console, "CLIENTS") if r["application_name"] == app]
    assert len(rows) == 1, rows
    return rows[0]


def default_search_path():
    return pg().sql("SHOW search_path", db="pgwarden_test")[0][0]


def test_set_is_kept_per_client_and_never_seen_by_another():
    pg().sql("CREATE SCHEMA IF NOT EXISTS tenant_a", db="pgwarden_test")
    with bouncer() as pw:
        a = connect(pw, "app_a")
        b = connect(pw, "app_b")
        a.execute("SET search_path TO tenant_a, public")
        a.execute("SET statement_timeout = '7s'")
        a_pid, a_path = one(a, "SELECT pg_backend_pid(), current_setting('search_path')")
        assert a_path == "tenant_a, public", a_path
        # One server: B gets the very backend A set things on, and sees none of it.
        b_pid, b_path, b_timeout = one(
            b, "SELECT pg_backend_pid(), current_setting('search_path'), "
               "current_setting('statement_timeout')")
        assert b_pid == a_pid
        assert b_path == default_search_path() and b_timeout == "0", (b_path, b_timeout)
        # A still has its settings (re-applied after B had the server).
        assert one(a, "SHOW search_path")[0] == "tenant_a, public"
        assert one(a, "SHOW statement_timeout")[0] == "7s"
        console = admin(pw)
        row = client_row(console, "app_a")
        assert row["session_state"] == "parameter" and row["pinned"] == 0, row
        assert "search_path" in row["session_state_query"], row
        assert client_row(console, "app_b")["session_state"] == "", client_row(console, "app_b")
        # A moves to another backend: its server is terminated while A is idle.
        pg().sql(f"SELECT pg_terminate_backend({a_pid})")
        harness.wait_until(lambda: a_pid not in pids_of(), what="backend gone")
        time.sleep(0.3)
        new_pid, new_path = one(a, "SELECT pg_backend_pid(), current_setting('search_path')")
        assert new_pid != a_pid and new_path == "tenant_a, public", (new_pid, new_path)
        assert one(a, "SHOW statement_timeout")[0] == "7s"
        # RESET and a rolled-back SET are not kept.
        a.execute("RESET statement_timeout")
        a.execute("BEGIN")
        a.execute("SET search_path TO public")
        a.execute("ROLLBACK")
        assert one(b, "SHOW statement_timeout")[0] == "0"
        assert one(a, "SHOW statement_timeout")[0] == "0"
        assert one(a, "SHOW search_path")[0] == "tenant_a, public"
        # A SET in a query that fails is void too (a multi-statement simple query).
        r = raw_login(pw, "raw")
        assert harness.first_error(r.query("SET search_path TO tenant_a; SELECT 1/0"))["C"] == "22012"
        assert client_row(console, "raw")["session_state"] == ""
        r.close()
        for c in (a, b, console):
            c.close()


def pids_of():
    rows = pg().sql("SELECT pid FROM pg_stat_activity WHERE datname = 'pgwarden_test'")
    return {int(row[0]) for row in rows}


def test_advisory_lock_pins_and_is_released_before_reuse():
    with bouncer(leak_warn_after=1) as pw:
        console = admin(pw)
        a = connect(pw, "locker")
        a_pid = one(a, "SELECT pg_backend_pid()")[0]
        assert one(a, "SELECT pg_advisory_lock(42)") is not None
        row = client_row(console, "locker")
        assert row["session_state"] == "advisory_lock" and row["pinned"] == 1, row
        assert "pg_advisory_lock(42)" in row["session_state_query"], row
        assert row["session_state_since"], row
        lease = [r for r in show(console, "LEASES") if r["application_name"] == "locker"]
        assert lease and lease[0]["state"] == "idle_pinned", lease
        assert lease[0]["session_state"] == "advisory_lock" and lease[0]["pinned"] == 1, lease
        # Pinned and idle past leak_warn_after: a suspected leak.
        harness.wait_until(lambda: any(r["application_name"] == "locker"
                                       for r in show(console, "LEAKS")), what="SHOW LEAKS row")
        # Another client waits for the only server; once A leaves, the lock is released
        # before B gets the backend, so B's try-lock succeeds at once.
        got = {}

        def other():
            b = connect(pw, "waiter")
            got["row"] = one(b, "SELECT pg_backend_pid(), pg_try_advisory_lock(42)")
            b.execute("SELECT pg_advisory_unlock_all()")
            b.close()

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.5)
        assert "row" not in got  # A is pinned: B waits
        a.close()
        t.join(10)
        assert got["row"] == (a_pid, True), got
        # The lock taken and released again: the pin ends with it.
        c = connect(pw, "locker")
        one(c, "SELECT pg_advisory_lock(7)")
        assert client_row(console, "locker")["pinned"] == 1
        one(c, "SELECT pg_advisory_unlock(7)")
        row = client_row(console, "locker")
        assert row["pinned"] == 0 and row["session_state"] == "", row
        # The _xact_ form never pins.
        c.execute("BEGIN")
        one(c, "SELECT pg_advisory_xact_lock(8)")
        c.execute("COMMIT")
        assert client_row(console, "locker")["pinned"] == 0
        # One call locking a lock per row is counted as one: unlocking one of them unpins the
        # client, and the server is unlocked before another client gets it.
        one(c, "SELECT pg_advisory_lock(k) FROM generate_series(100, 102) k")
        one(c, "SELECT pg_advisory_unlock(100)")
        assert client_row(console, "locker")["pinned"] == 0
        d = connect(pw, "after-locker")
        assert one(d, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0] == 0
        d.close()
        events = [e for e in show(console, "EVENTS") if e["application_name"] == "locker"]
        kinds = [e for e in events if e["action"] == "session_state"]
        assert len(kinds) == 1 and "advisory lock" in kinds[0]["reason"], events
        assert kinds[0]["first_query"] == "SELECT pg_advisory_lock(42)", kinds
        assert "app 'locker'" in pw.log() and "advisory lock" in pw.log()
        c.close()
        console.close()


def test_listen_pins_and_gets_notifications():
    import psycopg2
    with bouncer(default_pool_size=2) as pw:
        console = admin(pw)
        dsn = pw.dsn(user="app_user", application_name="listener")
        listener = psycopg2.connect(dsn)
        listener.autocommit = True
        cur = listener.cursor()
        cur.execute("LISTEN jobs")
        row = client_row(console, "listener")
        assert row["session_state"] == "listen" and row["pinned"] == 1, row
        # Other clients keep using the other server meanwhile.
        other = connect(pw, "busy")
        for _ in range(20):
            one(other, "SELECT 1")
        for i in range(3):
            pg().sql(f"NOTIFY jobs, 'job {i}'", db="pgwarden_test")
        got = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            if select.select([listener], [], [], 1)[0]:
                listener.poll()
                while listener.notifies:
                    got.append(listener.notifies.pop(0).payload)
        assert got == ["job 0", "job 1", "job 2"], got
        cur.execute("UNLISTEN *")
        row = client_row(console, "listener")
        assert row["pinned"] == 0 and row["session_state"] == "", row
        listener.close()
        other.close()
        console.close()


def test_temp_tables_pin_until_dropped():
    with bouncer() as pw:
        console = admin(pw)
        a = connect(pw, "temper")
        a.execute("CREATE TEMP TABLE scratch (x int)")
        a.execute("INSERT INTO scratch VALUES (1)")
        row = client_row(console, "temper")
        assert row["session_state"] == "temp_table" and row["pinned"] == 1, row
        assert one(a, "SELECT count(*) FROM scratch")[0] == 1
        a.execute("DROP TABLE scratch")
        assert client_row(console, "temper")["pinned"] == 0
        # ON COMMIT DROP inside a transaction leaves nothing behind.
        a.execute("BEGIN")
        a.execute("CREATE TEMP TABLE t2 (x int) ON COMMIT DROP")
        a.execute("COMMIT")
        assert client_row(console, "temper")["pinned"] == 0
        # A client that leaves with a temp table: the next one does not see it.
        a.execute("CREATE TEMP TABLE left_behind (x int)")
        a.close()
        b = connect(pw, "next")
        assert one(b, "SELECT count(*) FROM pg_tables WHERE tablename = 'left_behind'")[0] == 0
        b.close()
        console.close()


def test_pin_mode_pins_parameters_too():
    with bouncer(apps={"pinner*": "session_state=pin"}) as pw:
        console = admin(pw)
        a = connect(pw, "pinner-1")
        a.execute("SET work_mem = '8MB'")
        row = client_row(console, "pinner-1")
        assert row["session_state"] == "parameter" and row["pinned"] == 1, row
        a.execute("RESET work_mem")
        assert client_row(console, "pinner-1")["pinned"] == 0
        # The same SET under the default (track) does not pin.
        b = connect(pw, "other")
        b.execute("SET work_mem = '8MB'")
        assert client_row(console, "other")["pinned"] == 0
        for c in (a, b, console):
            c.close()


def test_reject_mode_refuses_with_0A000():
    import psycopg
    p = pg()
    databases = {"pgwarden_test": f"host=127.0.0.1 port={p.port} dbname=pgwarden_test "
                                  "session_state=reject"}
    with bouncer(databases=databases) as pw:
        a = connect(pw, "strict")
        cases = [("SET search_path TO public", "SET LOCAL"),
                 ("SELECT pg_advisory_lock(1)", "pg_advisory_xact_lock"),
                 ("LISTEN jobs", "session-mode"),
                 ("CREATE TEMP TABLE t (x int)", "ON COMMIT DROP")]
        for sql, hint in cases:
            try:
                a.execute(sql)
                raise AssertionError(f"{sql} was not refused")
            except psycopg.errors.FeatureNotSupported as e:
                assert e.sqlstate == "0A000", e
                assert "not allowed in transaction pooling" in e.diag.message_primary, e
                assert "session_state = reject" in e.diag.message_detail, e.diag.message_detail
                assert hint in e.diag.message_hint, e.diag.message_hint
        # Through the extended protocol, with a parameter.
        try:
            a.execute("SELECT pg_advisory_lock(%s)", (5,))
            raise AssertionError("the parameterised lock was not refused")
        except psycopg.errors.FeatureNotSupported as e:
            assert e.sqlstate == "0A000", e
        # A named prepared statement (mapped to pgwarden's names in transaction pooling): the
        # refused Parse is replaced, and the statement still answers with the refusal.
        for _ in range(2):
            try:
                a.execute("SELECT pg_advisory_lock(%s)", (6,), prepare=True)
                raise AssertionError("the prepared lock was not refused")
            except psycopg.errors.FeatureNotSupported as e:
                assert e.sqlstate == "0A000", e
        assert one(a, "SELECT %s::int + 1", (1,), prepare=True)[0] == 2
        # Inside a transaction the refusal fails the transaction, as any error would.
        a.execute("BEGIN")
        try:
            a.execute("SET work_mem = '8MB'")
        except psycopg.errors.FeatureNotSupported:
            pass
        try:
            a.execute("SELECT 1")
            raise AssertionError("the failed transaction went on")
        except psycopg.errors.InFailedSqlTransaction:
            pass
        a.execute("ROLLBACK")
        # What does not outlive the transaction is fine.
        a.execute("BEGIN")
        a.execute("SET LOCAL work_mem = '8MB'")
        assert one(a, "SELECT pg_advisory_xact_lock(3)") is not None
        a.execute("COMMIT")
        assert one(a, "SELECT 41 + 1")[0] == 42
        console = admin(pw)
        events = [e for e in show(console, "EVENTS") if e["action"] == "session_state_refused"]
        assert any("advisory lock" in e["reason"] for e in events), events
        # Nothing was left on the server.
        assert one(a, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0] == 0
        a.close()
        console.close()


def test_allow_mode_is_todays_behaviour():
    with bouncer(session_state="allow") as pw:
        a = connect(pw, "a")
        b = connect(pw, "b")
        a.execute("SET application_name = 'a'")  # (reported: pgwarden re-applies it anyway)
        a.execute("SET work_mem = '9MB'")
        # Not tracked: B, on the same backend, sees A's SET.
        assert one(b, "SHOW work_mem")[0] == "9MB"
        console = admin(pw)
        assert client_row(console, "a")["session_state"] == ""
        for c in (a, b, console):
            c.close()


def test_idle_pinned_timeout_ends_a_pinned_client():
    import psycopg
    with bouncer(apps={"sleepy": "idle_pinned_timeout=1"}, default_pool_size=2) as pw:
        a = connect(pw, "sleepy")
        one(a, "SELECT pg_advisory_lock(11)")
        time.sleep(2.5)
        try:
            one(a, "SELECT 1")
            raise AssertionError("the pinned client was not ended")
        except psycopg.OperationalError as e:
            assert "idle_pinned_timeout" in str(e), e
        b = connect(pw, "check")
        # Its lock went with it (the server was reset before reuse, or closed).
        assert one(b, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0] == 0
        b.close()


if __name__ == "__main__":
    harness.main(globals())
