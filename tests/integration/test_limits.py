#!/usr/bin/python3
"""PgBouncer's per-database and per-user limits, against a real PostgreSQL 15.

Client caps (max_db_client_connections, max_user_client_connections): the login over the cap
is refused with PgBouncer's text and SQLSTATE 53300, the others are served, a slot comes back
when its client leaves, and SHOW DATABASES / SHOW USERS show the caps and the counts.
transaction_timeout (global and per [users] entry): a transaction that lasts too long, idle or
running, ends the client with FATAL 25P04 and is rolled back; short ones are left alone.
query_wait_timeout per [users] and [databases] entry: the user's wins over the database's, which
wins over the global key.
Host lists with load_balance_hosts: round-robin spreads new server connections over the hosts
(here the same PostgreSQL over TCP and over its Unix socket), disable stays on one host and moves
on to the next when it cannot connect (a dead port)."""
import time

import harness
from common import admin, pg, show


def login(pw, user="app_user", db="pgwarden_test"):
    """A raw protocol client past login (trust auth)."""
    client = harness.RawClient(pw.port)
    client.send_startup({"user": user, "database": db})
    messages = client.read_until()
    assert messages and messages[-1][0] == b"Z", messages
    return client


def refused(pw, user="app_user", db="pgwarden_test"):
    """The FATAL a login gets (it must not be let in)."""
    client = harness.RawClient(pw.port)
    client.send_startup({"user": user, "database": db})
    messages = client.read_until(types=(b"Z", b"E"))
    client.close()
    error = harness.first_error(messages)
    assert error is not None, f"{user}@{db} was let in: {messages}"
    assert error["S"] == "FATAL", error
    return error


def served(client):
    return client.query("SELECT 1")[-1] == (b"Z", b"I")


def row(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_max_user_client_connections_refuses_the_login_over_the_cap():
    with harness.Pgwarden(pg(), auth_type="trust", admin_users="postgres",
                          max_user_client_connections=2) as pw:
        first, second = login(pw), login(pw)
        error = refused(pw)
        assert error["C"] == "53300", error
        assert error["M"] == "client connections exceeded (max_user_client_connections)", error
        assert "app_user" in error["D"] and "2" in error["D"], error
        # Another user has a count of its own.
        other = login(pw, user="scram_user")
        assert served(first) and served(second) and served(other)
        with admin(pw) as console:
            users = show(console, "USERS")
            alice = row(users, name="app_user")
            assert alice["max_user_client_connections"] == 2, alice
            assert alice["current_client_connections"] == 2, alice
            assert row(users, name="scram_user")["current_client_connections"] == 1
        # A client that leaves gives its slot back.
        first.close()
        harness.wait_until(lambda: not _refuses(pw), 5, what="the slot to come back")
        second.close()
        other.close()


def _refuses(pw):
    client = harness.RawClient(pw.port)
    client.send_startup({"user": "app_user", "database": "pgwarden_test"})
    messages = client.read_until(types=(b"Z", b"E"))
    client.close()
    return harness.first_error(messages) is not None


def test_users_entry_sets_its_own_client_cap():
    users = {"app_user": "max_user_client_connections=1", "scram_user": "pool_size=5"}
    with harness.Pgwarden(pg(), auth_type="trust", users=users, admin_users="postgres",
                          max_user_client_connections=3) as pw:
        only = login(pw)
        error = refused(pw)
        assert error["M"] == "client connections exceeded (max_user_client_connections)", error
        # scram_user has an entry without the key: the global cap of 3 applies.
        mine = [login(pw, user="scram_user") for _ in range(3)]
        assert refused(pw, user="scram_user")["C"] == "53300"
        with admin(pw) as console:
            users = show(console, "USERS")
            assert row(users, name="app_user")["max_user_client_connections"] == 1
            assert row(users, name="scram_user")["max_user_client_connections"] == 3
            assert row(users, name="scram_user")["current_client_connections"] == 3
        assert served(only) and all(served(c) for c in mine)
        for c in [only] + mine:
            c.close()


def test_admin_users_are_never_refused_the_console():
    # As in PgBouncer: the console's admins are counted, but no client cap locks them out.
    with harness.Pgwarden(pg(), auth_type="trust", admin_users="postgres",
                          max_user_client_connections=1, max_db_client_connections=1) as pw:
        consoles = [admin(pw) for _ in range(3)]
        assert show(consoles[-1], "VERSION")
        for c in consoles:
            c.close()


def test_max_db_client_connections_global_and_per_database():
    databases = {
        "pgwarden_test": f"host=127.0.0.1 port={pg().port} dbname=pgwarden_test",
        "capped": f"host=127.0.0.1 port={pg().port} dbname=pgwarden_test "
                  "max_db_client_connections=1",
    }
    with harness.Pgwarden(pg(), auth_type="trust", databases=databases, admin_users="postgres",
                          max_db_client_connections=2) as pw:
        # The entry's cap: one client, whatever its user.
        only = login(pw, db="capped")
        error = refused(pw, user="scram_user", db="capped")
        assert error["C"] == "53300", error
        assert error["M"] == "client connections exceeded (max_db_client_connections)", error
        assert "capped" in error["D"] and "1" in error["D"], error
        # The global cap for the other entry, counted apart from "capped".
        a = login(pw)
        b = login(pw, user="scram_user")
        assert refused(pw, user="md5_user")["M"].endswith("(max_db_client_connections)")
        with admin(pw) as console:
            dbs = show(console, "DATABASES")
            assert row(dbs, name="capped")["max_client_connections"] == 1
            assert row(dbs, name="capped")["current_client_connections"] == 1
            assert row(dbs, name="pgwarden_test")["max_client_connections"] == 2
            assert row(dbs, name="pgwarden_test")["current_client_connections"] == 2
        assert served(only) and served(a) and served(b)
        a.close()
        harness.wait_until(lambda: _db_has_room(pw), 5, what="the slot to come back")
        only.close()
        b.close()


def _db_has_room(pw):
    client = harness.RawClient(pw.port)
    client.send_startup({"user": "md5_user", "database": "pgwarden_test"})
    messages = client.read_until(types=(b"Z", b"E"))
    client.close()
    return harness.first_error(messages) is None


def test_a_reload_changes_the_cap_for_later_logins():
    with harness.Pgwarden(pg(), auth_type="trust", max_user_client_connections=1) as pw:
        first = login(pw)
        assert refused(pw)["C"] == "53300"
        pw.rewrite_config(max_user_client_connections=0)  # unlimited
        pw.reload()
        harness.wait_until(lambda: not _refuses(pw), 5, what="the reload")
        assert served(first)
        first.close()


# --- transaction_timeout -------------------------------------------------------------------

def fatal_within(client, sqlstate, seconds, keep_busy=None):
    """Waits for the FATAL that ends `client`, sending `keep_busy` queries meanwhile (so that
    no other timeout could be the cause); returns the seconds it took and the error."""
    start = time.monotonic()
    client.sock.settimeout(seconds + 2)
    while time.monotonic() - start < seconds:
        messages = client.query(keep_busy) if keep_busy else client.read_until(types=(), limit=10)
        error = harness.first_error(messages)
        if error is not None:
            assert error["C"] == sqlstate and error["S"] == "FATAL", error
            return time.monotonic() - start, error
        if not keep_busy and not messages:
            break
    raise AssertionError(f"no FATAL {sqlstate} within {seconds}s")


def test_transaction_timeout_ends_a_long_transaction_and_rolls_it_back():
    with harness.Pgwarden(pg(), auth_type="trust", transaction_timeout=1,
                          default_pool_size=1) as pw:
        harness.psql(pw.dsn(), "DROP TABLE IF EXISTS t_xt; CREATE TABLE t_xt (id int)")
        # Short transactions one after the other, for longer than the timeout: untouched.
        steady = login(pw)
        start = time.monotonic()
        while time.monotonic() - start < 1.6:
            assert steady.query("BEGIN; SELECT pg_sleep(0.1); COMMIT")[-1] == (b"Z", b"I")
        steady.close()
        # One long transaction, never idle for long: each statement is quick.
        client = login(pw, user="scram_user")  # the table's owner
        assert client.query("BEGIN")[-1] == (b"Z", b"T")
        assert client.query("INSERT INTO t_xt VALUES (1)")[-1] == (b"Z", b"T")
        elapsed, error = fatal_within(client, "25P04", 5, keep_busy="SELECT pg_sleep(0.1)")
        assert elapsed < 2.5, elapsed
        assert "transaction_timeout" in error["M"], error
        # Rolled back, and its server is free again for the next client (pool_size = 1).
        assert harness.psql(pw.dsn(), "SELECT count(*) FROM t_xt").stdout.strip() == "0"
        assert "transaction_timeout" in pw.log()


def test_transaction_timeout_counts_a_single_long_statement():
    with harness.Pgwarden(pg(), auth_type="trust", transaction_timeout=1) as pw:
        client = login(pw)
        client.send_query("SELECT pg_sleep(20)")
        start = time.monotonic()
        elapsed, _ = fatal_within(client, "25P04", 5)
        assert time.monotonic() - start < 3, elapsed
        # The statement was cancelled, not left running on the server.
        harness.wait_until(
            lambda: pg().sql("SELECT count(*) FROM pg_stat_activity "
                             "WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'")[0][0] == "0",
            5, what="the statement to be cancelled")


def test_users_transaction_timeout_applies_to_that_user_only():
    users = {"scram_user": "transaction_timeout=1"}
    with harness.Pgwarden(pg(), auth_type="trust", users=users) as pw:
        other = login(pw)  # app_user: [pgbouncer] transaction_timeout is 0
        assert other.query("BEGIN")[-1] == (b"Z", b"T")
        client = login(pw, user="scram_user")
        assert client.query("BEGIN")[-1] == (b"Z", b"T")
        elapsed, _ = fatal_within(client, "25P04", 5)
        assert elapsed < 2.5, elapsed
        time.sleep(0.5)
        assert other.query("SELECT 1")[-1] == (b"Z", b"T")
        assert other.query("COMMIT")[-1] == (b"Z", b"I")
        other.close()


# --- query_wait_timeout per user and per database ----------------------------------------------

def waits_then_fails(client, within):
    """Sends a query that must queue; returns how long until the query_wait_timeout FATAL."""
    client.sock.settimeout(within)
    start = time.monotonic()
    client.send_query("SELECT 1")
    error = harness.first_error(client.read_until(types=(), limit=10))
    elapsed = time.monotonic() - start
    assert error is not None, f"no error within {within}s"
    assert error["C"] == "53300" and "query_wait_timeout" in error["M"], error
    return elapsed


def test_query_wait_timeout_of_the_user_over_the_database_over_the_key():
    databases = {
        "pgwarden_test": f"host=127.0.0.1 port={pg().port} dbname=pgwarden_test pool_size=1 "
                         "query_wait_timeout=1",
        "other": f"host=127.0.0.1 port={pg().port} dbname=pgwarden_test pool_size=1",
    }
    users = {"scram_user": "query_wait_timeout=3"}
    with harness.Pgwarden(pg(), auth_type="trust", databases=databases, users=users,
                          query_wait_timeout=30) as pw:
        holders = []
        for user, db in (("app_user", "pgwarden_test"), ("scram_user", "pgwarden_test"),
                         ("app_user", "other")):
            holder = login(pw, user=user, db=db)
            assert holder.query("BEGIN; SELECT 1")[-1] == (b"Z", b"T")  # holds the pool's one
            holders.append(holder)
        # The database's value: app_user gives up after 1 s, not the key's 30.
        elapsed = waits_then_fails(login(pw), within=5)
        assert 0.8 < elapsed < 2.5, elapsed
        # scram_user's [users] value wins over the database's.
        elapsed = waits_then_fails(login(pw, user="scram_user"), within=7)
        assert 2.8 < elapsed < 4.5, elapsed
        # Neither entry sets it for app_user on "other": the key's 30 s, so it is still
        # queued after 2 s, and served once the server comes back.
        patient = login(pw, db="other")
        patient.send_query("SELECT 1")
        time.sleep(2)
        assert holders[2].query("COMMIT")[-1] == (b"Z", b"I")
        patient.sock.settimeout(5)
        messages = patient.read_until()
        assert harness.first_error(messages) is None and messages[-1] == (b"Z", b"I"), messages
        for c in holders + [patient]:
            c.close()


# --- host lists and load_balance_hosts --------------------------------------------------------

def hold_servers(pw, count):
    """`count` clients, each holding its own server inside a transaction; returns the clients
    and each server's (inet_server_addr(), inet_server_port()): (None, None) over the socket."""
    import psycopg
    clients, where = [], []
    for _ in range(count):
        conn = psycopg.connect(pw.dsn(), autocommit=True)
        conn.execute("BEGIN")
        addr, port = conn.execute("SELECT inet_server_addr(), inet_server_port()").fetchone()
        clients.append(conn)
        where.append((str(addr) if addr is not None else None, port))
    return clients, where


def server_addrs(pw):
    with admin(pw) as console:
        return sorted(r["addr"] for r in show(console, "SERVERS"))


def test_round_robin_spreads_new_server_connections_over_the_hosts():
    databases = {"pgwarden_test": f"host=127.0.0.1,{pg().dir} port={pg().port} "
                                  "dbname=pgwarden_test"}
    with harness.Pgwarden(pg(), auth_type="trust", databases=databases,
                          admin_users="postgres") as pw:
        clients, where = hold_servers(pw, 4)
        # Each new login takes the next host: two over TCP, two over the Unix socket.
        assert sorted(where, key=str) == sorted([("127.0.0.1", pg().port)] * 2 + [(None, None)] * 2,
                                                key=str), where
        assert server_addrs(pw) == ["127.0.0.1", "127.0.0.1", "unix", "unix"]
        with admin(pw) as console:
            db = row(show(console, "DATABASES"), name="pgwarden_test")
            assert db["host"] == f"127.0.0.1,{pg().dir}" and db["port"] == pg().port, db
            assert db["load_balance_hosts"] == "round-robin", db
            assert row(show(console, "POOLS"), database="pgwarden_test")["load_balance_hosts"] \
                == "round-robin"
        for c in clients:
            c.close()


def test_disable_keeps_new_server_connections_on_one_host():
    databases = {"pgwarden_test": f"host=127.0.0.1,{pg().dir} port={pg().port} "
                                  "dbname=pgwarden_test load_balance_hosts=disable"}
    with harness.Pgwarden(pg(), auth_type="trust", databases=databases,
                          admin_users="postgres") as pw:
        clients, where = hold_servers(pw, 4)
        assert where == [("127.0.0.1", pg().port)] * 4, where
        with admin(pw) as console:
            db = row(show(console, "DATABASES"), name="pgwarden_test")
            assert db["load_balance_hosts"] == "disable", db
        for c in clients:
            c.close()


def test_disable_moves_on_to_the_next_host_when_one_cannot_connect():
    dead = harness.free_port()
    databases = {"pgwarden_test": f"host=127.0.0.1,127.0.0.1 port={dead},{pg().port} "
                                  "dbname=pgwarden_test load_balance_hosts=disable"}
    with harness.Pgwarden(pg(), auth_type="trust", databases=databases,
                          admin_users="postgres") as pw:
        # The first login finds the first host dead and is served by the second one; later
        # logins start at the second host and never try the dead one again.
        clients, where = hold_servers(pw, 3)
        assert where == [("127.0.0.1", pg().port)] * 3, where
        failed = f"server login to 127.0.0.1:{dead} failed, trying the next host"
        assert pw.log().count(failed) == 1, pw.log()
        with admin(pw) as console:
            state = {r["key"]: r["value"] for r in show(console, "STATE")}
            assert "last error" in state[f"breaker 127.0.0.1:{dead}"], state
        for c in clients:
            c.close()


def test_round_robin_also_skips_a_host_that_cannot_connect():
    dead = harness.free_port()
    databases = {"pgwarden_test": f"host=127.0.0.1,127.0.0.1 port={dead},{pg().port} "
                                  "dbname=pgwarden_test"}
    with harness.Pgwarden(pg(), databases=databases) as pw:
        clients, where = hold_servers(pw, 4)
        assert where == [("127.0.0.1", pg().port)] * 4, where
        # The first and the third login began at the dead host: each moved on to the live one.
        assert pw.log().count(f"server login to 127.0.0.1:{dead} failed") == 2, pw.log()
        for c in clients:
            c.close()


if __name__ == "__main__":
    harness.main(globals())
