#!/usr/bin/python3
"""Client caps per database and per user (max_db_client_connections,
max_user_client_connections), against a real PostgreSQL 15: the login over the cap is refused
with PgBouncer's text and SQLSTATE 53300, the others are served, a slot comes back when its
client leaves, and SHOW DATABASES / SHOW USERS show the caps and the counts."""
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


if __name__ == "__main__":
    harness.main(globals())
