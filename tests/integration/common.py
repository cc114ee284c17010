"""Shared fixtures for the integration tests: one PostgreSQL per test file."""
import atexit

import harness

_pg = None


def pg():
    """The file's PostgreSQL, started on first use and stopped at exit."""
    global _pg
    if _pg is None:
        _pg = harness.Postgres().__enter__()
        atexit.register(_pg.cleanup)
    return _pg


# The console and a raw application client, for the leak guard's tests.

def admin(pw):
    import psycopg
    return psycopg.connect(pw.dsn(user="postgres", db="pgbouncer"), autocommit=True)


def expect_refused(conn, cases):
    """Each (sql, psycopg error class) in `cases` is refused with that error on `conn`."""
    for sql, error in cases:
        try:
            conn.execute(sql)
            raise AssertionError(f"{sql} accepted")
        except error:
            pass


def show(conn, what):
    cur = conn.execute(f"SHOW {what}")
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def raw_login(pw, application_name, db="pgwarden_test"):
    """A protocol-level client past login (trust auth), for exact FATALs and counts."""
    client = harness.RawClient(pw.port)
    client.send_startup({"user": "app_user", "database": db,
                         "application_name": application_name})
    messages = client.read_until()
    assert messages and messages[-1][0] == b"Z", messages
    return client
