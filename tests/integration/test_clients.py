#!/usr/bin/python3
"""Real drivers through pgwarden: psql, psycopg 3, psycopg2, asyncpg, SQLAlchemy, node-postgres."""
import asyncio
import os
import subprocess

import harness
from common import pg

HERE = os.path.dirname(os.path.abspath(__file__))


def test_psql_all_users_and_auth_types():
    for auth_type in ("scram-sha-256", "md5", "plain"):
        with harness.Pgwarden(pg(), auth_type=auth_type) as pw:
            for user in ("scram_user", "md5_user"):
                out = harness.psql(pw.dsn(user=user), "SELECT current_user, 40 + 2").stdout.strip()
                assert out == f"{user}|42", (auth_type, user, out)
    with harness.Pgwarden(pg(), auth_type="trust") as pw:
        out = harness.psql(pw.dsn(user="trust_user"), "SELECT current_user").stdout.strip()
        assert out == "trust_user", out


def scram_iterations_offered(pw, user):
    """The i= of pgwarden's SCRAM server-first-message to `user` (raw protocol)."""
    import struct
    client = harness.RawClient(pw.port)
    try:
        client.send_startup({"user": user, "database": "pgwarden_test"})
        kind, body = client.read_message()
        assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 10, (kind, body)  # SASL
        first = b"n,,n=,r=pgwardentestnonce"
        mechanism = b"SCRAM-SHA-256\0"
        payload = mechanism + struct.pack("!I", len(first)) + first
        client.send(b"p" + struct.pack("!I", len(payload) + 4) + payload)
        kind, body = client.read_message()
        assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 11, (kind, body)
        fields = dict(part.split("=", 1) for part in body[4:].decode().split(","))
        return int(fields["i"])
    finally:
        client.close()


def test_scram_iterations_for_plaintext_passwords():
    # auth_file has plaintext passwords here: pgwarden makes their SCRAM secrets with
    # scram_iterations, and challenges an unknown user with the same count.
    with harness.Pgwarden(pg(), auth_type="scram-sha-256", scram_iterations="12345") as pw:
        assert scram_iterations_offered(pw, "scram_user") == 12345
        assert scram_iterations_offered(pw, "no_such_user") == 12345
        out = harness.psql(pw.dsn(user="scram_user"), "SELECT current_user").stdout.strip()
        assert out == "scram_user", out
    with harness.Pgwarden(pg(), auth_type="scram-sha-256") as pw:
        assert scram_iterations_offered(pw, "scram_user") == 4096


def test_psql_script_with_transaction():
    with harness.Pgwarden(pg()) as pw:
        script = """
        CREATE TABLE IF NOT EXISTS t_script (id int primary key, v text);
        TRUNCATE t_script;
        BEGIN;
        INSERT INTO t_script SELECT g, 'v' || g FROM generate_series(1, 100) g;
        COMMIT;
        SELECT count(*), sum(id) FROM t_script;
        """
        out = harness.psql(pw.dsn(), script).stdout.strip().splitlines()
        assert out[-1] == "100|5050", out


def test_psycopg3():
    import psycopg
    with harness.Pgwarden(pg()) as pw:
        with psycopg.connect(pw.dsn()) as conn:
            assert conn.execute("SELECT %s::int + %s", (1, 2)).fetchone()[0] == 3
            conn.execute("CREATE TABLE IF NOT EXISTS t_pg3 (id int, name text)")
            conn.execute("TRUNCATE t_pg3")
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO t_pg3 VALUES (%s, %s)",
                                    [(i, f"n{i}") for i in range(200)])
            conn.commit()
            assert conn.execute("SELECT count(*) FROM t_pg3").fetchone()[0] == 200
            rows = conn.execute("SELECT id, name FROM t_pg3 WHERE id < %s ORDER BY id", (3,)).fetchall()
            assert rows == [(0, "n0"), (1, "n1"), (2, "n2")], rows


def test_psycopg2():
    import psycopg2
    with harness.Pgwarden(pg()) as pw:
        conn = psycopg2.connect(pw.dsn(user="md5_user"))
        try:
            cur = conn.cursor()
            cur.execute("SELECT %s || %s", ("a", "b"))
            assert cur.fetchone()[0] == "ab"
            cur.execute("SELECT sum(g) FROM generate_series(1, 1000) g")
            assert cur.fetchone()[0] == 500500
            conn.rollback()
        finally:
            conn.close()


def test_asyncpg_session_mode():
    import asyncpg

    async def scenario(pw):
        conn = await asyncpg.connect(pw.url(), timeout=10)
        try:
            assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
            stmt = await conn.prepare("SELECT generate_series(1, $1::int)")
            rows = await stmt.fetch(5)
            assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
            async with conn.transaction():
                await conn.execute("CREATE TEMP TABLE t_async (i int)")
                await conn.executemany("INSERT INTO t_async VALUES ($1)", [(i,) for i in range(50)])
                assert await conn.fetchval("SELECT count(*) FROM t_async") == 50
        finally:
            await conn.close()

    with harness.Pgwarden(pg(), pool_mode="session") as pw:
        asyncio.run(scenario(pw))


def test_sqlalchemy():
    import sqlalchemy
    with harness.Pgwarden(pg(), pool_mode="session") as pw:
        engine = sqlalchemy.create_engine(pw.url(scheme="postgresql+psycopg2"), pool_size=3)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS t_sa (id int, v text)"))
            conn.execute(sqlalchemy.text("TRUNCATE t_sa"))
            conn.execute(sqlalchemy.text("INSERT INTO t_sa VALUES (:i, :v)"),
                         [{"i": i, "v": str(i)} for i in range(10)])
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM t_sa")).scalar() == 10
        engine.dispose()


def test_node_postgres():
    with harness.Pgwarden(pg()) as pw:
        env = {"PGW_URL": pw.url(), "NODE_PATH": os.path.join(HERE, "node_modules")}
        result = harness.run(["node", os.path.join(HERE, "node", "basic.js")], env=env, timeout=60)
        assert "node-postgres ok" in result.stdout, result.stdout + result.stderr


if __name__ == "__main__":
    harness.main(globals())
