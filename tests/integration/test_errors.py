#!/usr/bin/python3
"""Bad input and refusals get a PostgreSQL ErrorResponse with the right SQLSTATE, and
pgwarden keeps serving afterwards."""
import asyncio
import struct
import time

import harness
from common import pg


def sqlstate_of_login(pw, **kwargs):
    import asyncpg

    async def attempt():
        try:
            conn = await asyncpg.connect(**kwargs, host="127.0.0.1", port=pw.port, timeout=10)
            await conn.close()
            return None
        except asyncpg.PostgresError as e:
            return e.sqlstate, str(e)
    return asyncio.run(attempt())


def still_serving(pw):
    assert harness.psql(pw.dsn(), "SELECT 1").stdout.strip() == "1"


def test_wrong_password_is_28P01():
    with harness.Pgwarden(pg()) as pw:
        state, text = sqlstate_of_login(pw, user="scram_user", password="wrong",
                                        database="pgwarden_test")
        assert state == "28P01", (state, text)
        assert 'password authentication failed for user "scram_user"' in text
        state, _ = sqlstate_of_login(pw, user="no_such_user", password="x", database="pgwarden_test")
        assert state == "28P01"
        result = harness.psql(pw.dsn(password="wrong"), "SELECT 1", check=False)
        assert "password authentication failed" in result.stderr, result.stderr
    with harness.Pgwarden(pg(), auth_type="md5") as pw:
        state, _ = sqlstate_of_login(pw, user="md5_user", password="wrong", database="pgwarden_test")
        assert state == "28P01"
        still_serving(pw)


def test_unknown_database_is_3D000():
    with harness.Pgwarden(pg()) as pw:
        state, text = sqlstate_of_login(pw, user="scram_user", password="scram_pw", database="nope")
        assert state == "3D000", (state, text)
        assert 'database "nope" does not exist' in text
        still_serving(pw)


def test_max_client_conn_is_53300():
    import psycopg
    with harness.Pgwarden(pg(), max_client_conn=3) as pw:
        held = [psycopg.connect(pw.dsn()) for _ in range(3)]
        try:
            state, text = sqlstate_of_login(pw, user="scram_user", password="scram_pw",
                                            database="pgwarden_test")
            assert state == "53300", (state, text)
            assert "no more connections allowed (max_client_conn)" in text
        finally:
            for conn in held:
                conn.close()
        time.sleep(0.3)
        still_serving(pw)


def test_query_wait_timeout():
    import psycopg
    with harness.Pgwarden(pg(), default_pool_size=1, query_wait_timeout=2) as pw:
        holder = psycopg.connect(pw.dsn())
        holder.execute("SELECT 1")  # psycopg opened a transaction: the only server is held
        start = time.monotonic()
        try:
            with psycopg.connect(pw.dsn(), autocommit=True) as waiter:
                waiter.execute("SELECT 1")
            raise AssertionError("query did not time out")
        except psycopg.OperationalError as e:
            elapsed = time.monotonic() - start
            assert "query_wait_timeout" in str(e), str(e)
            assert 1.5 < elapsed < 5, elapsed
        holder.rollback()
        holder.close()
        still_serving(pw)


def expect_protocol_error(pw, payload, expect_error=True):
    raw = harness.RawClient(pw.port)
    raw.send(payload)
    messages = raw.read_until(types=(b"E",))
    raw.close()
    if expect_error:
        error = harness.first_error(messages)
        assert error is not None, messages
        assert error["C"] == "08P01", error
        assert error["S"] == "FATAL"
        return error
    return None


def test_malformed_input_gets_08P01_and_pgwarden_survives():
    with harness.Pgwarden(pg()) as pw:
        # A startup packet claiming 4 GB.
        expect_protocol_error(pw, struct.pack("!I", 0xFFFFFFFF) + b"\0\3\0\0")
        # A length below the minimum.
        expect_protocol_error(pw, struct.pack("!II", 4, 196608))
        # Parameters without their terminator.
        body = struct.pack("!I", 196608) + b"user\0scram_user"
        expect_protocol_error(pw, struct.pack("!I", len(body) + 4) + body)
        # Random junk, then a truncated packet and an abrupt close: no crash.
        rng = __import__("random").Random(7)
        for _ in range(50):
            raw = harness.RawClient(pw.port)
            raw.send(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))))
            raw.close()
        raw = harness.RawClient(pw.port)
        raw.send(struct.pack("!I", 100) + b"\0\3")
        raw.close()
        still_serving(pw)


def test_startup_length_below_eight_is_answered_at_once():
    # PostgreSQL closes at once on such a length; pgwarden says why first (FATAL 08P01) and
    # does not wait for the rest of a packet that cannot come (client_login_timeout is 60 s).
    with harness.Pgwarden(pg(), client_login_timeout=60) as pw:
        for length in (0, 4, 7):
            raw = harness.RawClient(pw.port, timeout=5)
            start = time.monotonic()
            raw.send(struct.pack("!I", length))  # the length field and nothing else
            messages = raw.read_until(types=(b"E",))
            error = harness.first_error(messages)
            assert error is not None, (length, messages)
            assert (error["S"], error["C"]) == ("FATAL", "08P01"), error
            assert error["M"] == "invalid length of startup packet", error
            assert raw.read_message() is None  # then the connection is closed
            assert time.monotonic() - start < 2, length
            raw.close()
        still_serving(pw)


def login_raw(pw):
    raw = harness.RawClient(pw.port)
    raw.send_startup({"user": "trust_user", "database": "pgwarden_test"})
    messages = raw.read_until()
    assert messages[-1][0] == b"Z", messages
    return raw


def test_bad_message_after_login_is_08P01():
    with harness.Pgwarden(pg(), auth_type="trust") as pw:
        raw = login_raw(pw)
        raw.send(b"\x01" + struct.pack("!I", 4))  # no such message type
        error = harness.first_error(raw.read_until(types=(b"E",)))
        assert error and error["C"] == "08P01", error
        raw.close()
        raw = login_raw(pw)
        raw.send(b"S" + struct.pack("!I", 100000))  # Sync claiming a 100 kB body
        error = harness.first_error(raw.read_until(types=(b"E",)))
        assert error and error["C"] == "08P01", error
        raw.close()
        still_serving(pw)


def test_newer_minor_protocol_gets_negotiate_protocol_version():
    with harness.Pgwarden(pg(), auth_type="trust") as pw:
        raw = harness.RawClient(pw.port)
        raw.send_startup({"user": "trust_user", "database": "pgwarden_test",
                          "_pq_.unknown_option": "1"}, version=(3 << 16) | 2)
        messages = raw.read_until()
        assert messages[0][0] == b"v", messages
        newest, count = struct.unpack("!II", messages[0][1][:8])
        assert newest == 196608 and count == 1
        assert b"_pq_.unknown_option" in messages[0][1]
        assert messages[-1][0] == b"Z"
        result = raw.query("SELECT 42")
        assert any(m[0] == b"D" and b"42" in m[1] for m in result), result
        raw.close()


def test_ssl_request_is_refused_with_N():
    with harness.Pgwarden(pg()) as pw:
        raw = harness.RawClient(pw.port)
        raw.send(struct.pack("!II", 8, 80877103))
        assert raw.sock.recv(1) == b"N"
        raw.close()
        out = harness.psql(pw.dsn(sslmode="prefer"), "SELECT 'clear'").stdout.strip()
        assert out == "clear"


def test_unknown_startup_options_rejected():
    with harness.Pgwarden(pg(), auth_type="trust") as pw:
        raw = harness.RawClient(pw.port)
        raw.send_startup({"user": "trust_user", "database": "pgwarden_test",
                          "options": "-X nonsense"})
        error = harness.first_error(raw.read_until(types=(b"E",)))
        assert error and error["C"] == "08P01" and "options" in error["M"], error
        raw.close()


if __name__ == "__main__":
    harness.main(globals())
