#!/usr/bin/python3
"""Admin console: the virtual database "pgbouncer" (alias "pgwarden").

Column names and order are PgBouncer 1.25's (docs/admin.md); counters must move with real
traffic; psql (simple protocol) and psycopg 3 (extended protocol, autocommit) both work;
admin_users may do everything, stats_users only SHOW, anyone else is refused.
"""
import os
import signal
import subprocess
import threading
import time

import harness
from common import expect_refused, pg

# PgBouncer 1.25's column lists (see /work/shared/research/pgbouncer.md, section 1.3).
SOCKET_COLUMNS = ["type", "user", "database", "replication", "state", "addr", "port",
                  "local_addr", "local_port", "connect_time", "request_time", "wait", "wait_us",
                  "close_needed", "ptr", "link", "remote_pid", "tls", "application_name",
                  "prepared_statements", "id"]
STAT_NAMES = ["server_assignment_count", "xact_count", "query_count", "received", "sent",
              "xact_time", "query_time", "wait_time", "client_parse_count",
              "server_parse_count", "bind_count", "client_login_count"]
AVG_NAMES = ["avg_" + n if n not in ("received", "sent") else {"received": "avg_recv",
                                                                 "sent": "avg_sent"}[n]
             for n in STAT_NAMES]
BARE_NAMES = [{"received": "bytes_received", "sent": "bytes_sent"}.get(n, n) for n in STAT_NAMES]
EXPECTED_COLUMNS = {
    "POOLS": ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
              "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
              "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
              "pool_mode", "load_balance_hosts"],
    # pgwarden's session-state columns follow PgBouncer's (docs/admin.md).
    "CLIENTS": SOCKET_COLUMNS + ["session_state", "session_state_since", "session_state_query",
                                 "pinned"],
    "SERVERS": SOCKET_COLUMNS,
    # PgBouncer's columns, then pgwarden's circuit breaker (docs/operations.md).
    "DATABASES": ["name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
                  "reserve_pool_size", "server_lifetime", "pool_mode", "load_balance_hosts",
                  "max_connections", "current_connections", "max_client_connections",
                  "current_client_connections", "paused", "disabled",
                  "breaker_state", "breaker_last_error", "breaker_next_probe"],
    "USERS": ["name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
              "current_connections", "max_user_client_connections",
              "current_client_connections"],
    "STATS": ["database"] + ["total_" + n for n in STAT_NAMES] + AVG_NAMES,
    "STATS_TOTALS": ["database"] + BARE_NAMES,
    "STATS_AVERAGES": ["database"] + BARE_NAMES,
    "TOTALS": ["name", "value"],
    "LISTS": ["list", "items"],
    "CONFIG": ["key", "value", "default", "changeable"],
    "STATE": ["key", "value"],
    "VERSION": ["version"],
}
USERLIST = dict(harness.USERS, postgres="", stats_user="", nobody="")


def bouncer(**settings):
    base = dict(admin_users="postgres", stats_users="stats_user", auth_type="trust",
                userlist=USERLIST)
    base.update(settings)
    return harness.Pgwarden(pg(), **base)


def admin(pw, user="postgres", db="pgbouncer"):
    import psycopg
    return psycopg.connect(pw.dsn(user=user, db=db), autocommit=True)


def show(conn, what):
    """SHOW over the extended protocol: list of dicts."""
    cur = conn.execute(f"SHOW {what}")
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def pool_row(conn, db="pgwarden_test", user="app_user"):
    for row in show(conn, "POOLS"):
        if row["database"] == db and row["user"] == user:
            return row
    return None


def stats_row(conn, db="pgwarden_test"):
    for row in show(conn, "STATS"):
        if row["database"] == db:
            return row
    return None


def test_user_pgbouncer_of_the_same_os_user_opens_the_console_over_the_unix_socket():
    # PgBouncer's rule, which its own test suite relies on: no password, full access, but only
    # over the Unix socket and from a process of pgwarden's own OS user (this test's).
    with bouncer(auth_type="scram-sha-256") as pw:
        local = f"host={pw.dir} port={pw.port} dbname=pgbouncer user=pgbouncer"
        assert harness.psql(local, "SHOW VERSION").stdout.startswith("pgwarden")
        assert harness.psql(local, "RELOAD").returncode == 0  # an admin command
        # Over TCP it is an ordinary user, unknown to the auth_file.
        refused = harness.psql(f"host=127.0.0.1 port={pw.port} dbname=pgbouncer user=pgbouncer "
                               "password=x", "SHOW VERSION", check=False)
        assert refused.returncode != 0
        assert 'password authentication failed for user "pgbouncer"' in refused.stderr, refused
        # Over the socket, only for the console.
        other = harness.psql(f"host={pw.dir} port={pw.port} dbname=pgwarden_test user=pgbouncer "
                             "password=x", "SELECT 1", check=False)
        assert other.returncode != 0, other


def test_columns_match_pgbouncer_extended_protocol():
    with bouncer() as pw:
        harness.psql(pw.dsn(user="app_user"), "SELECT 1")
        with admin(pw) as conn:
            for what, expected in EXPECTED_COLUMNS.items():
                cur = conn.execute(f"SHOW {what}")
                names = [c.name for c in cur.description]
                assert names == expected, f"SHOW {what}: {names}"
                cur.fetchall()
            # Numbers are int8 columns, as in PgBouncer: drivers get integers.
            row = pool_row(conn)
            assert isinstance(row["sv_idle"], int) and row["pool_mode"] == "transaction"
            # A prepared (named) statement goes through Describe of the statement.
            cur = conn.cursor()
            cur.execute("SHOW VERSION", prepare=True)
            cur.execute("SHOW VERSION", prepare=True)
            assert "PgBouncer 1.25" in cur.fetchone()[0]


def test_columns_match_pgbouncer_psql_simple_protocol():
    with bouncer() as pw:
        for what, expected in EXPECTED_COLUMNS.items():
            out = harness.run(["psql", "-X", "-A", "-F", "|", "-d",
                               pw.dsn(user="postgres", db="pgbouncer"), "-c", f"SHOW {what}"]).stdout
            assert out.splitlines()[0].split("|") == expected, f"SHOW {what}: {out[:300]}"
        # The alias "pgwarden" is the same console.
        out = harness.psql(pw.dsn(user="postgres", db="pgwarden"), "SHOW STATE").stdout
        assert "paused|no" in out


def test_counters_and_pool_states_move():
    import psycopg
    with bouncer() as pw:
        with admin(pw) as console:
            before = stats_row(console) or {f"total_{n}": 0 for n in STAT_NAMES}
            with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as app:
                app.prepare_threshold = None  # no extra Parse/Sync round trip for preparing
                for i in range(10):
                    app.execute("SELECT %s::int", (i,))  # extended: Parse/Bind/Execute/Sync
                with app.transaction():
                    app.execute("SELECT 1")
                    app.execute("SELECT 2")
                    # Inside the transaction the client holds a server.
                    row = pool_row(console)
                    assert row["cl_active"] >= 1 and row["sv_active"] == 1, row
                    clients = [c for c in show(console, "CLIENTS") if c["user"] == "app_user"]
                    assert len(clients) == 1 and clients[0]["state"] == "active", clients
                    assert clients[0]["link"], clients
                    servers = [s for s in show(console, "SERVERS") if s["state"] == "active"]
                    assert len(servers) == 1 and servers[0]["remote_pid"] > 0, servers
                    assert servers[0]["link"] == clients[0]["ptr"]
                row = pool_row(console)
                assert row["sv_active"] == 0 and row["sv_idle"] + row["sv_used"] == 1, row
                clients = [c for c in show(console, "CLIENTS") if c["user"] == "app_user"]
                assert clients[0]["state"] == "idle" and clients[0]["link"] is None, clients
            after = stats_row(console)
            # 10 autocommit statements + 1 transaction; BEGIN/SELECT/SELECT/COMMIT = 4 queries.
            assert after["total_xact_count"] - before["total_xact_count"] == 11, after
            assert after["total_query_count"] - before["total_query_count"] == 14, after
            # Parse and Bind counts are of named statements only (as in PgBouncer 1.21+):
            # these were all unnamed.
            assert after["total_bind_count"] == before["total_bind_count"], after
            assert after["total_client_parse_count"] == before["total_client_parse_count"]
            assert after["total_received"] > before["total_received"]
            assert after["total_sent"] > before["total_sent"]
            assert after["total_xact_time"] > before["total_xact_time"]
            assert after["total_query_time"] > before["total_query_time"]
            assert after["total_server_assignment_count"] > before["total_server_assignment_count"]
            assert after["total_client_login_count"] - before["total_client_login_count"] == 1
            totals = {r["name"]: r["value"] for r in show(console, "TOTALS")}
            assert totals["total_xact_count"] == after["total_xact_count"]
            db = [d for d in show(console, "DATABASES") if d["name"] == "pgwarden_test"][0]
            assert db["current_connections"] == 1 and db["pool_size"] == 10, db
            users = {u["name"]: u for u in show(console, "USERS")}
            assert users["app_user"]["current_connections"] == 1, users["app_user"]
            lists = {r["list"]: r["items"] for r in show(console, "LISTS")}
            assert lists["used_servers"] == 1 and lists["pools"] == 2, lists
            with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as app:
                for i in range(3):
                    app.execute("SELECT %s::int + 1", (i,), prepare=True)  # one named Parse
            named = stats_row(console)
            assert named["total_client_parse_count"] - after["total_client_parse_count"] == 1
            assert named["total_server_parse_count"] - after["total_server_parse_count"] == 1
            assert named["total_bind_count"] - after["total_bind_count"] == 3, named


def test_show_clients_gives_each_clients_own_address():
    # The peer address comes from accept4(): a TCP client shows its own address and port (as
    # its socket sees them), a Unix-socket client "unix" and 0; both get the local end too.
    import psycopg
    import socket
    with bouncer() as pw:
        with admin(pw) as console, \
                psycopg.connect(pw.dsn(user="app_user", application_name="over_tcp")) as tcp, \
                psycopg.connect(f"host={pw.dir} port={pw.port} dbname=pgwarden_test "
                                "user=app_user application_name=over_unix") as unix:
            tcp.execute("SELECT 1")
            unix.execute("SELECT 1")
            with socket.socket(fileno=os.dup(tcp.pgconn.socket)) as s:
                client_host, client_port = s.getsockname()[:2]
            rows = {c["application_name"]: c for c in show(console, "CLIENTS")}
            assert rows["over_tcp"]["addr"] == client_host == "127.0.0.1", rows["over_tcp"]
            assert rows["over_tcp"]["port"] == client_port, (rows["over_tcp"], client_port)
            assert rows["over_tcp"]["local_addr"] == "127.0.0.1", rows["over_tcp"]
            assert rows["over_tcp"]["local_port"] == pw.port, rows["over_tcp"]
            assert rows["over_unix"]["addr"] == "unix" and rows["over_unix"]["port"] == 0, \
                rows["over_unix"]
            assert rows["over_unix"]["local_addr"] == "unix", rows["over_unix"]


def test_averages_over_stats_period():
    with bouncer(stats_period=1) as pw:
        with admin(pw) as console:
            for _ in range(20):
                harness.psql(pw.dsn(user="app_user"), "SELECT pg_sleep(0.05)")
            time.sleep(2.5)  # at least one full stats_period after the traffic
            row = stats_row(console)
            assert row["total_xact_count"] >= 20
            averages = show(console, "STATS_AVERAGES")[0]
            # The last complete period may be quiet; across two rolls one saw the traffic or
            # the numbers are consistent (avg times only from periods that had queries).
            assert set(averages) == set(EXPECTED_COLUMNS["STATS_AVERAGES"])
            for _ in range(30):
                harness.psql(pw.dsn(user="app_user"), "SELECT pg_sleep(0.05)")
                row = stats_row(console)
                if row["avg_xact_count"] > 0:
                    break
            assert row["avg_xact_count"] > 0 and row["avg_query_time"] >= 40000, row


def test_unknown_command_is_error_and_session_continues():
    import psycopg
    with bouncer() as pw:
        with admin(pw) as conn:
            try:
                conn.execute("FROBNICATE")
                raise AssertionError("no error")
            except psycopg.errors.SyntaxError as e:
                assert e.diag.severity == "ERROR" and e.diag.sqlstate == "42601"
            try:
                conn.execute("SHOW NOTHING")
                raise AssertionError("no error")
            except psycopg.errors.SyntaxError:
                pass
            assert show(conn, "VERSION")
        # psql: the error is reported and the next command on the connection still runs.
        out = harness.run(["psql", "-X", "-A", "-t", "-d", pw.dsn(user="postgres", db="pgbouncer")],
                          input="FROBNICATE;\nSHOW STATE;\n", check=False)
        assert "ERROR:  unknown command" in out.stderr, out.stderr
        assert "paused|no" in out.stdout, out.stdout


def test_stats_user_can_show_but_not_pause_and_others_are_refused():
    import psycopg
    with bouncer() as pw:
        with admin(pw, user="stats_user") as conn:
            assert show(conn, "POOLS")
            for command in ("PAUSE", "RESUME", "RELOAD", "SET default_pool_size = 3",
                            "KILL_CLIENT 1", "SHUTDOWN"):
                try:
                    conn.execute(command)
                    raise AssertionError(f"{command} allowed for a stats user")
                except psycopg.errors.InsufficientPrivilege as e:
                    assert e.diag.sqlstate == "42501"
            assert show(conn, "STATE")[0]["value"] == "yes"  # still connected, not paused
        try:
            admin(pw, user="nobody")
            raise AssertionError("a user outside admin_users/stats_users got in")
        except psycopg.OperationalError as e:
            assert "not allowed" in str(e), str(e)
        raw = harness.RawClient(pw.port)
        raw.send_startup({"user": "app_user", "database": "pgbouncer"})
        error = harness.first_error(raw.read_until((b"Z", b"E")))
        assert error and error["S"] == "FATAL" and error["C"] == "28000", error
        raw.close()


def test_console_with_password_auth():
    with bouncer(auth_type="scram-sha-256", admin_users="app_user") as pw:
        out = harness.psql(pw.dsn(user="app_user", db="pgbouncer"), "SHOW VERSION").stdout
        assert "pgwarden" in out
        bad = harness.psql(pw.dsn(user="app_user", password="wrong", db="pgbouncer"), "SHOW VERSION",
                           check=False)
        assert bad.returncode != 0 and "password authentication failed" in bad.stderr


def test_pause_holds_queries_until_resume():
    import psycopg
    with bouncer() as pw:
        with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as app, admin(pw) as console:
            first_pid = app.execute("SELECT pg_backend_pid()").fetchone()[0]
            console.execute("PAUSE pgwarden_test")
            # PAUSE returns once the database's servers are closed.
            assert pool_row(console)["sv_idle"] == 0
            assert [d for d in show(console, "DATABASES") if d["name"] == "pgwarden_test"][0]["paused"] == 1
            result = {}

            def query():
                result["pid"] = app.execute("SELECT pg_backend_pid()").fetchone()[0]
                result["at"] = time.monotonic()

            thread = threading.Thread(target=query)
            thread.start()
            time.sleep(1.0)
            assert "pid" not in result, "a query ran during PAUSE"
            assert pool_row(console)["cl_waiting"] == 1
            try:
                console.execute("PAUSE pgwarden_test")
                raise AssertionError("double PAUSE accepted")
            except psycopg.errors.ObjectNotInPrerequisiteState:
                pass
            resumed = time.monotonic()
            console.execute("RESUME pgwarden_test")
            thread.join(10)
            assert "pid" in result and result["at"] >= resumed
            assert result["pid"] != first_pid  # PAUSE closed the old server
            # Global PAUSE / RESUME, and SHOW STATE follows it.
            console.execute("PAUSE")
            assert {r["key"]: r["value"] for r in show(console, "STATE")}["paused"] == "yes"
            console.execute("RESUME")
            assert app.execute("SELECT 1").fetchone()[0] == 1
            try:
                console.execute("PAUSE nosuchdb")
                raise AssertionError("PAUSE of an unknown database accepted")
            except psycopg.errors.InvalidCatalogName:
                pass


def test_disable_refuses_new_logins_until_enable():
    """DISABLE db: new logins get FATAL 55000, connected clients go on,
    SHOW DATABASES says disabled; ENABLE admits them again (PgBouncer's commands)."""
    import psycopg
    with bouncer() as pw:
        with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as app, admin(pw) as console:
            console.execute("DISABLE pgwarden_test")
            console.execute("DISABLE pgwarden_test")  # repeating it is fine, as in PgBouncer
            row = [d for d in show(console, "DATABASES") if d["name"] == "pgwarden_test"][0]
            assert row["disabled"] == 1, row
            client = harness.RawClient(pw.port)
            client.send_startup({"user": "app_user", "database": "pgwarden_test"})
            error = harness.first_error(client.read_until(types=(b"Z", b"E")))
            client.close()
            assert error and error["S"] == "FATAL" and error["C"] == "55000", error
            assert error["M"] == 'database "pgwarden_test" is disabled', error
            assert "ENABLE pgwarden_test" in error["H"], error
            # The connected client is not affected.
            assert app.execute("SELECT 41 + 1").fetchone()[0] == 42
            expect_refused(console, (
                ("DISABLE nosuchdb", psycopg.errors.InvalidCatalogName),
                ("DISABLE pgbouncer", psycopg.errors.ObjectNotInPrerequisiteState),
                ("ENABLE", psycopg.errors.SyntaxError)))
            console.execute("ENABLE pgwarden_test")
            row = [d for d in show(console, "DATABASES") if d["name"] == "pgwarden_test"][0]
            assert row["disabled"] == 0, row
            with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as again:
                assert again.execute("SELECT 1").fetchone()[0] == 1


def test_kill_client_ends_that_client():
    import psycopg
    with bouncer() as pw:
        victim = psycopg.connect(pw.dsn(user="app_user", application_name="victim"), autocommit=True)
        other = psycopg.connect(pw.dsn(user="app_user", application_name="bystander"), autocommit=True)
        with admin(pw) as console:
            ids = {c["application_name"]: c["id"] for c in show(console, "CLIENTS")}
            console.execute(f"KILL_CLIENT {ids['victim']}")
            try:
                harness.wait_until(lambda: victim.closed or not victim.execute("SELECT 1"), 3)
                victim.execute("SELECT 1")
                raise AssertionError("killed client still works")
            except psycopg.OperationalError as e:
                assert "administrator command" in str(e) or "closed" in str(e), str(e)
            assert other.execute("SELECT 1").fetchone()[0] == 1
            harness.wait_until(lambda: "victim" not in
                               {c["application_name"] for c in show(console, "CLIENTS")}, 5)
            try:
                console.execute("KILL_CLIENT 999999")
                raise AssertionError("KILL_CLIENT of an unknown id accepted")
            except psycopg.errors.UndefinedObject:
                pass
        other.close()
        victim.close()


def test_kill_database_drops_clients_and_pauses():
    import psycopg
    with bouncer() as pw:
        app = psycopg.connect(pw.dsn(user="app_user"), autocommit=True)
        app.execute("SELECT 1")
        with admin(pw) as console:
            console.execute("KILL pgwarden_test")
            try:
                app.execute("SELECT 1")
                raise AssertionError("client survived KILL")
            except psycopg.OperationalError:
                pass
            harness.wait_until(lambda: pg().backend_count(user="app_user") == 0, 5,
                               what="servers to close")
            assert [d for d in show(console, "DATABASES") if d["name"] == "pgwarden_test"][0]["paused"] == 1
            console.execute("RESUME pgwarden_test")
            assert harness.psql(pw.dsn(user="app_user"), "SELECT 7").stdout.strip() == "7"
        app.close()


def test_reconnect_replaces_servers_and_wait_close():
    import psycopg
    with bouncer() as pw:
        with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as app, admin(pw) as console:
            pid1 = app.execute("SELECT pg_backend_pid()").fetchone()[0]
            console.execute("RECONNECT pgwarden_test")
            pid2 = app.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert pid2 != pid1
            # A leased server is replaced when released; WAIT_CLOSE waits for that.
            app.execute("BEGIN")
            app.execute("SELECT 1")
            console.execute("RECONNECT")
            assert [s for s in show(console, "SERVERS") if s["state"] == "active"][0]["close_needed"] == 1
            done = {}

            def wait_close():
                with admin(pw) as second:
                    second.execute("WAIT_CLOSE pgwarden_test")
                    done["at"] = time.monotonic()

            thread = threading.Thread(target=wait_close)
            thread.start()
            time.sleep(0.7)
            assert "at" not in done, "WAIT_CLOSE returned while a server still needs closing"
            committed = time.monotonic()
            app.execute("COMMIT")
            thread.join(10)
            assert done.get("at", 0) >= committed
            pid3 = app.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert pid3 != pid2
            harness.wait_until(lambda: pg().backend_count(user="app_user") == 1, 5)


def test_set_changes_config_and_pool():
    import psycopg
    from concurrent.futures import ThreadPoolExecutor
    with bouncer() as pw:
        with admin(pw) as console:
            config = {r["key"]: r for r in show(console, "CONFIG")}
            assert config["default_pool_size"]["changeable"] == "yes"
            assert config["listen_port"]["changeable"] == "no"
            assert config["default_pool_size"]["default"] == "20"
            console.execute("SET default_pool_size = 2")
            config = {r["key"]: r for r in show(console, "CONFIG")}
            assert config["default_pool_size"]["value"] == "2"
            db = [d for d in show(console, "DATABASES") if d["name"] == "pgwarden_test"][0]
            assert db["pool_size"] == 2
            console.execute("SET query_timeout TO '5'")
            assert {r["key"]: r["value"] for r in show(console, "CONFIG")}["query_timeout"] == "5"
            expect_refused(console, (
                ("SET listen_port = 1", psycopg.errors.CantChangeRuntimeParam),
                ("SET no_such_key = 1", psycopg.errors.UndefinedObject),
                ("SET default_pool_size = lots", psycopg.errors.InvalidParameterValue)))

        def one(_):
            with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as conn:
                conn.execute("SELECT pg_sleep(0.4)")

        def burst():
            with ThreadPoolExecutor(6) as ex:
                list(ex.map(one, range(12)))

        _, peak, _ = harness.max_backends_during(pg(), burst, user="app_user")
        assert 0 < peak <= 2, f"pool of 2 after SET, saw {peak} backends"


def test_reload_rereads_the_file():
    with bouncer() as pw:
        with admin(pw) as console:
            pw.rewrite_config(default_pool_size=4, query_wait_timeout=33)
            console.execute("RELOAD")
            config = {r["key"]: r["value"] for r in show(console, "CONFIG")}
            assert config["default_pool_size"] == "4" and config["query_wait_timeout"] == "33"
            assert "re-reading" in pw.log()
            # A broken file: ERROR F0000, the old configuration stays.
            with open(pw.ini, "a") as f:
                f.write("default_pool_size = many\n")
            import psycopg
            try:
                console.execute("RELOAD")
                raise AssertionError("broken RELOAD accepted")
            except psycopg.Error as e:
                assert e.diag.sqlstate == "F0000", e.diag.sqlstate
            assert {r["key"]: r["value"] for r in show(console, "CONFIG")}["default_pool_size"] == "4"


def test_reload_and_set_agree_on_restart_keys():
    """A reload keeps the running value of a restart-only key and names it in the log; SET
    refuses the same keys and takes the others, pkt_buf and verbose included (issues 18, 21)."""
    import psycopg
    with bouncer() as pw:
        with admin(pw) as console:
            pw.rewrite_config(listen_port=pw.port + 1, pkt_buf=8192, default_pool_size=7)
            console.execute("RELOAD")
            config = {r["key"]: r for r in show(console, "CONFIG")}
            assert config["listen_port"]["value"] == str(pw.port), config["listen_port"]
            assert config["pkt_buf"]["value"] == "8192" and config["pkt_buf"]["changeable"] == "yes"
            assert config["default_pool_size"]["value"] == "7"
            expected = (f"listen_port changed from '{pw.port}' to '{pw.port + 1}' but takes "
                        f"effect only at restart: keeping '{pw.port}'")
            harness.wait_until(lambda: expected in pw.log(), 5)
            assert "pkt_buf changed" not in pw.log()
            # Still listening where it was, and a new client gets the new buffer size.
            with psycopg.connect(pw.dsn(user="app_user"), autocommit=True) as conn:
                assert conn.execute("SELECT repeat('x', 20000)").fetchone()[0] == "x" * 20000
            console.execute("SET pkt_buf = 16384")
            assert {r["key"]: r["value"] for r in show(console, "CONFIG")}["pkt_buf"] == "16384"
            # verbose is live since issue 21, as in PgBouncer: SET takes it at once.
            console.execute("SET verbose = 1")
            after = {r["key"]: r for r in show(console, "CONFIG")}["verbose"]
            assert after["value"] == "1" and after["changeable"] == "yes", after
            for key, value in (("logfile", "'/tmp/elsewhere.log'"),
                               ("workers", "2"), ("listen_port", str(pw.port + 2))):
                try:
                    console.execute(f"SET {key} = {value}")
                    raise AssertionError(f"SET {key} accepted")
                except psycopg.errors.CantChangeRuntimeParam as e:
                    assert key in str(e), e
                assert config[key]["changeable"] == "no", config[key]


def test_shutdown_exits_zero():
    import psycopg
    with bouncer() as pw:
        app = psycopg.connect(pw.dsn(user="app_user"), autocommit=True)
        app.execute("SELECT 1")
        conn = admin(pw)
        try:
            conn.execute("SHUTDOWN")
        except psycopg.OperationalError:
            pass  # the console goes away with everyone else
        assert pw.proc.wait(10) == 0
        try:
            app.execute("SELECT 1")
            raise AssertionError("client survived SHUTDOWN")
        except psycopg.OperationalError:
            pass


if __name__ == "__main__":
    harness.main(globals())
