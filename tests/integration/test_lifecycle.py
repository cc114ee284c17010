#!/usr/bin/python3
"""Timeouts, server upkeep (idle timeout, lifetime, min_pool_size), the command line, signals
and logging, each against a real PostgreSQL 15."""
import os
import signal
import socket
import struct
import subprocess
import time

import harness
from common import pg


def backend_pids(user="scram_user"):
    rows = pg().sql("SELECT pid FROM pg_stat_activity WHERE datname = 'pgwarden_test' "
                    f"AND usename = '{user}' AND backend_type = 'client backend'")
    return {int(r[0]) for r in rows}


def login(pw, user="scram_user", password="scram_pw"):
    """A raw protocol client past authentication (trust auth keeps it simple)."""
    client = harness.RawClient(pw.port)
    client.send_startup({"user": user, "database": "pgwarden_test"})
    messages = client.read_until()
    assert messages and messages[-1][0] == b"Z", messages
    return client


def expect_fatal(client, sqlstate, within):
    """Reads until the connection ends; the last ErrorResponse must carry sqlstate."""
    client.sock.settimeout(within)
    start = time.monotonic()
    messages = client.read_until(types=(), limit=100)
    error = harness.first_error(messages)
    assert error is not None, f"no error within {within}s: {messages}"
    assert error["C"] == sqlstate, error
    assert error["S"] == "FATAL", error
    return time.monotonic() - start, error


def test_client_idle_timeout():
    with harness.Pgwarden(pg(), auth_type="trust", client_idle_timeout=1) as pw:
        client = login(pw)
        elapsed, error = expect_fatal(client, "57P05", within=5)
        assert 0.8 < elapsed < 3, elapsed
        assert "client_idle_timeout" in error["M"]
        assert "client_idle_timeout" in pw.log()


def test_users_client_idle_timeout_applies_to_that_user_only():
    users = {"scram_user": "client_idle_timeout=1"}
    with harness.Pgwarden(pg(), auth_type="trust", users=users) as pw:
        other = login(pw, user="app_user")
        client = login(pw)
        elapsed, error = expect_fatal(client, "57P05", within=5)
        assert 0.8 < elapsed < 3, elapsed
        # app_user has no timeout ([pgbouncer] client_idle_timeout is 0): still served.
        assert other.query("SELECT 1")[-1][0] == b"Z"
        other.close()


def test_reloaded_timeout_applies_to_connected_clients():
    with harness.Pgwarden(pg(), auth_type="trust") as pw:
        client = login(pw)
        pw.rewrite_config(client_idle_timeout=1)
        pw.reload()
        elapsed, _ = expect_fatal(client, "57P05", within=6)
        assert elapsed < 4


def test_idle_transaction_timeout_rolls_back_and_frees_lock():
    import psycopg
    with harness.Pgwarden(pg(), auth_type="trust", idle_transaction_timeout=1,
                          default_pool_size=1) as pw:
        harness.psql(pw.dsn(), "DROP TABLE IF EXISTS t_itt; CREATE TABLE t_itt (id int primary key);"
                               "INSERT INTO t_itt VALUES (1)")
        client = login(pw)
        client.query("BEGIN")
        messages = client.query("SELECT pg_backend_pid()")
        leaky_pid = int(next(body for t, body in messages if t == b"D")[6:])
        messages = client.query("SELECT * FROM t_itt WHERE id = 1 FOR UPDATE")
        assert messages[-1] == (b"Z", b"T"), messages
        elapsed, _ = expect_fatal(client, "25P03", within=5)
        assert elapsed < 3
        # The only server was rolled back, so the lock is free and no transaction is open.
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT id FROM t_itt WHERE id = 1 FOR UPDATE NOWAIT").fetchone() == (1,)
            assert conn.execute("SELECT count(*) FROM pg_stat_activity "
                                "WHERE state LIKE 'idle in transaction%'").fetchone()[0] == 0
            # And it was returned to the pool, not closed: the next client gets that backend.
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == leaky_pid


def test_query_timeout_cancels_the_query_and_keeps_the_session():
    with harness.Pgwarden(pg(), auth_type="trust", query_timeout=1, default_pool_size=1) as pw:
        client = login(pw)
        start = time.monotonic()
        client.sock.settimeout(10)
        messages = client.query("SELECT pg_sleep(20)")
        elapsed = time.monotonic() - start
        error = harness.first_error(messages)
        assert error and error["C"] == "57014" and error["S"] == "ERROR", messages
        assert messages[-1] == (b"Z", b"I"), messages
        assert 0.9 < elapsed < 3, elapsed
        # The same connection goes on, and the sleeping query is gone from PostgreSQL.
        messages = client.query("SELECT 'still here'")
        assert any(t == b"D" and b"still here" in body for t, body in messages), messages
        assert pg().sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(20)' "
                        "AND state = 'active'")[0][0] == "0"
        assert "query_timeout: cancelling" in pw.log()
        client.close()


def test_client_login_timeout():
    with harness.Pgwarden(pg(), client_login_timeout=1) as pw:
        with socket.create_connection(("127.0.0.1", pw.port)) as sock:
            sock.settimeout(5)
            # Half a startup packet: the connection is accepted (tcp_defer_accept waits only
            # for a first byte), then the login stalls.
            sock.sendall(struct.pack("!I", 64))
            start = time.monotonic()
            data = sock.recv(1000)  # pgwarden says why and closes
            assert time.monotonic() - start < 3.5
            assert data[:1] == b"E", data
            error = harness.error_fields(data[5:])
            assert error["C"] == "08P01" and "client_login_timeout" in error["M"], error
        harness.psql(pw.dsn(), "SELECT 1")


def client_rows(pw):
    """SHOW CLIENTS rows other than the console session asking."""
    out = harness.psql(pw.dsn(user="postgres", db="pgbouncer"), "SHOW CLIENTS").stdout
    return [line for line in out.splitlines() if line and "|pgbouncer|" not in line]


def test_tcp_defer_accept_keeps_silent_connections_out():
    # The default (45 s, as PgBouncer on Linux): a TCP connection that has sent nothing is still
    # the kernel's; it holds no session, so client_login_timeout does not apply to it yet, and
    # once it speaks it logs in as usual.
    console = dict(auth_type="trust", admin_users="postgres", client_login_timeout=1)
    with harness.Pgwarden(pg(), **console) as pw:
        assert harness.psql(pw.dsn(user="postgres", db="pgbouncer"),
                            "SHOW CONFIG").stdout.count("tcp_defer_accept|45|") == 1
        with socket.create_connection(("127.0.0.1", pw.port)) as sock:
            time.sleep(2)  # twice client_login_timeout
            assert client_rows(pw) == []
            sock.settimeout(0.3)
            try:
                data = sock.recv(1000)
            except socket.timeout:
                data = None
            assert data is None, f"a silent connection got {data!r}"
            sock.settimeout(10)
            raw = harness.RawClient(pw.port, sock=sock)  # the silent connection speaks now
            raw.send_startup({"user": "scram_user", "database": "pgwarden_test"})
            messages = raw.read_until()
            assert messages and messages[-1][0] == b"Z", messages
    # tcp_defer_accept = 0: the connection is accepted at once and the login timeout ends it.
    with harness.Pgwarden(pg(), tcp_defer_accept=0, **console) as pw:
        with socket.create_connection(("127.0.0.1", pw.port)) as sock:
            harness.wait_until(lambda: len(client_rows(pw)) == 1, 5,
                               what="the silent connection to show in SHOW CLIENTS")
            sock.settimeout(5)
            data = sock.recv(1000)
            assert data[:1] == b"E", data
            error = harness.error_fields(data[5:])
            assert error["C"] == "08P01" and "client_login_timeout" in error["M"], error


def test_server_idle_timeout_closes_idle_servers():
    with harness.Pgwarden(pg(), server_idle_timeout=1, default_pool_size=3) as pw:
        harness.psql(pw.dsn(), "SELECT 1")
        assert len(backend_pids()) >= 1
        harness.wait_until(lambda: len(backend_pids()) == 0, 6, what="idle servers to close")


def test_min_pool_size_keeps_warm_servers():
    with harness.Pgwarden(pg(), min_pool_size=3, default_pool_size=5,
                          server_idle_timeout=1) as pw:
        harness.psql(pw.dsn(), "SELECT 1")
        harness.wait_until(lambda: len(backend_pids()) == 3, 6, what="3 warm servers")
        time.sleep(2.5)  # past server_idle_timeout: the warm ones stay
        assert len(backend_pids()) == 3


def test_server_lifetime_replaces_old_servers():
    import psycopg
    with harness.Pgwarden(pg(), server_lifetime=1, default_pool_size=1) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            time.sleep(1.5)
            # Released after the first query, the old server is retired; the next is new.
            harness.wait_until(lambda: first not in backend_pids(), 5, what="old server to close")
            second = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert second != first


def test_server_lifetime_zero_uses_each_server_once():
    import psycopg
    with harness.Pgwarden(pg(), server_lifetime=0, default_pool_size=1) as pw:
        with psycopg.connect(pw.dsn(), autocommit=True) as conn:
            pids = [conn.execute("SELECT pg_backend_pid()").fetchone()[0] for _ in range(3)]
        assert len(set(pids)) == 3, pids


def test_statement_mode_refuses_transaction_blocks():
    with harness.Pgwarden(pg(), auth_type="trust", pool_mode="statement",
                          default_pool_size=1) as pw:
        assert harness.psql(pw.dsn(), "SELECT 1").stdout.strip() == "1"
        client = login(pw)
        messages = client.query("BEGIN")  # ends at EOF: no ReadyForQuery 'T' for the client
        error = harness.first_error(messages)
        assert error and error["C"] == "0A000" and error["S"] == "FATAL", messages
        assert (b"Z", b"T") not in messages, messages
        # The only server was rolled back and serves the next client.
        assert "statement pooling mode" in error["M"]
        out = harness.psql(pw.dsn(), "SELECT count(*) FROM pg_stat_activity "
                                     "WHERE state LIKE 'idle in transaction%'").stdout.strip()
        assert out == "0", out


def test_version_and_help():
    out = subprocess.run([harness.PGWARDEN_BIN, "-V"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("pgwarden "), out
    out = subprocess.run([harness.PGWARDEN_BIN, "-h"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "-d" in out.stdout and "-q" in out.stdout, out


def test_invalid_config_stops_startup_with_file_and_line():
    pw = harness.Pgwarden(pg(), default_pool_size="lots")
    pw.write_config()
    out = subprocess.run([harness.PGWARDEN_BIN, pw.ini], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0
    line = next(i for i, text in enumerate(open(pw.ini).read().splitlines(), 1)
                if text.startswith("default_pool_size"))
    assert f"{pw.ini}:{line}" in out.stderr and "default_pool_size" in out.stderr, out.stderr


def test_listen_everywhere_and_the_unix_sockets_mode_and_group():
    import grp
    import stat
    # A group other than ours where the machine has one (root may give the socket to it).
    groups = [g for g in grp.getgrall() if g.gr_gid != os.getgid()]
    group = groups[0] if groups and os.geteuid() == 0 else grp.getgrgid(os.getgid())
    pw = harness.Pgwarden(pg(), listen_addr="*", unix_socket_mode="0660",
                          unix_socket_group=group.gr_name)
    with pw:
        info = os.stat(os.path.join(pw.dir, f".s.PGSQL.{pw.port}"))
        assert stat.S_IMODE(info.st_mode) == 0o660, oct(info.st_mode)
        assert info.st_gid == group.gr_gid, (info.st_gid, group)
        # "*": IPv4 and (where the machine has it) IPv6.
        assert harness.psql(pw.dsn(), "SELECT 1").stdout.strip() == "1"
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
            ipv6 = True
        except OSError:
            ipv6 = False
        if ipv6:
            dsn = pw.dsn().replace("host=127.0.0.1", "host=::1")
            assert harness.psql(dsn, "SELECT 2").stdout.strip() == "2"
    # A mode that is not octal stops start-up, naming the key.
    bad = harness.Pgwarden(pg(), unix_socket_mode="rw-rw----")
    bad.write_config()
    out = subprocess.run([harness.PGWARDEN_BIN, bad.ini], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode != 0 and "unix_socket_mode" in out.stderr + out.stdout, out


def test_daemon_mode_pidfile_and_sigint():
    pw = harness.Pgwarden(pg())
    pw.write_config()
    pidfile = pw.settings["pidfile"]
    out = subprocess.run([harness.PGWARDEN_BIN, "-d", pw.ini], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out
    pid = harness.wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                             10, what="pidfile")
    pid = int(pid)
    try:
        harness.wait_until(lambda: socket.socket().connect_ex(("127.0.0.1", pw.port)) == 0, 10,
                           what="daemon to listen")
        assert harness.psql(pw.dsn(), "SELECT 42").stdout.strip() == "42"
        os.kill(pid, signal.SIGINT)
        harness.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, what="daemon to exit")
        assert not os.path.exists(pidfile)
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_exits_zero_and_logs_no_secrets():
    with harness.Pgwarden(pg(), log_connections=1, log_disconnections=1, workers=2) as pw:
        for user in ("scram_user", "md5_user", "app_user"):
            harness.psql(pw.dsn(user=user), "SELECT 1")
        harness.psql(pw.dsn(password="wrong"), "SELECT 1", check=False)
        assert pw.stop(signal.SIGTERM) == 0
        log = pw.log()
        assert "login attempt" in log and "closing because" in log, log
        # The wrong password's line names the mechanism, as PgBouncer's log does.
        assert ('closing because: SASL authentication failed: password authentication failed '
                'for user "scram_user"') in log, log
        for secret in ("scram_pw", "md5_pw", "app_pw", "wrong"):
            assert secret not in log, f"{secret!r} appears in the log"


def test_workers_join_as_clients_come_and_serve_across_threads():
    """A few clients stay on worker 0; from 32 sessions worker 1 takes new clients too, and then
    servers move between the workers and cancels cross threads; once the clients have gone
    worker 1 stops taking new ones."""
    import threading
    import psycopg
    step = 32
    with harness.Pgwarden(pg(), workers=2, default_pool_size=4, max_client_conn=100) as pw:
        joined = "client sessions: worker 1 takes new clients too"
        conns = [psycopg.connect(pw.dsn(), autocommit=True, prepare_threshold=None)
                 for _ in range(step)]
        assert joined not in pw.log()
        conns += [psycopg.connect(pw.dsn(), autocommit=True, prepare_threshold=None)
                  for _ in range(8)]
        assert f"{step} {joined}" in pw.log(), pw.log()[-2000:]
        # 40 clients on two workers share 4 servers: servers change threads as they go round.
        errors = []

        def work(conn):
            try:
                for i in range(20):
                    assert conn.execute("SELECT %s::int", (i,)).fetchone()[0] == i
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=work, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        # Cancels: the cancel connections go to worker 1 (it has fewer clients), the first
        # clients live on worker 0.
        for conn in (conns[0], conns[1], conns[-1]):
            harness.cancel_sleep(conn, after=0.3, within=3)
            assert conn.execute("SELECT 1").fetchone()[0] == 1
        for conn in conns:
            conn.close()
        harness.wait_until(lambda: "worker 1 takes no new clients" in pw.log(), 5,
                           what="worker 1 to stop taking clients")
        harness.psql(pw.dsn(), "SELECT 1")


if __name__ == "__main__":
    harness.main(globals())
