#!/usr/bin/python3
"""Protocol-level named prepared statements in transaction pooling (docs/transaction-pooling.md):
real drivers with their statement caches on, eviction, Close and DEALLOCATE ALL, a server lost
under a client, Parse errors inside a pipeline, and the console's counters."""
import json
import re
import time
import os
import struct
import subprocess

import harness
from common import pg, show
from test_pgbench import init_pgbench

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER_SECONDS = float(os.environ.get("PGWARDEN_DRIVER_SECONDS", "30"))


# --- Raw extended-protocol messages (RawClient), for exact replies.

def message(mtype, body=b""):
    return mtype + struct.pack("!I", len(body) + 4) + body


def parse(name, sql, types=()):
    body = name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!H", len(types))
    return message(b"P", body + b"".join(struct.pack("!I", t) for t in types))


def bind(name, values=(), portal=""):
    body = portal.encode() + b"\0" + name.encode() + b"\0" + struct.pack("!H", 0)
    body += struct.pack("!H", len(values))
    for v in values:
        body += struct.pack("!i", len(v)) + v.encode()
    return message(b"B", body + struct.pack("!H", 0))


def execute(portal=""):
    return message(b"E", portal.encode() + b"\0" + struct.pack("!I", 0))


def describe_statement(name):
    return message(b"D", b"S" + name.encode() + b"\0")


def close_statement(name):
    return message(b"C", b"S" + name.encode() + b"\0")


SYNC = message(b"S")


def raw_client(pw):
    client = harness.RawClient(pw.port)
    client.send_startup({"user": "app_user", "database": "pgwarden_test"})
    assert client.read_until()[-1][0] == b"Z"
    return client


def replies(client, *messages):
    """Sends `messages` and reads up to the ReadyForQuery: the reply types and the errors."""
    client.send(b"".join(messages))
    got = client.read_until()
    types = b"".join(m[0] for m in got).decode()
    errors = [harness.error_fields(body) for mtype, body in got if mtype == b"E"]
    return types, errors, got


def data_values(got):
    """The first column of each DataRow."""
    out = []
    for mtype, body in got:
        if mtype == b"D":
            length = struct.unpack("!i", body[2:6])[0]
            out.append(body[6:6 + length].decode())
    return out


def console_of(pw, user="app_user"):
    import psycopg
    return psycopg.connect(pw.dsn(user=user, db="pgbouncer"), autocommit=True)


def trust(**settings):
    settings.setdefault("pool_mode", "transaction")
    return harness.Pgwarden(pg(), auth_type="trust", admin_users="app_user", **settings)


# --- Drivers


def start(cmd, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env)


def tally_of(name, proc, timeout):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (name, out[-2000:], err[-2000:])
    tally = json.loads(out.strip().splitlines()[-1])
    assert tally["errors"] == 0, (name, tally)
    return tally


def test_drivers_with_statement_caches_in_transaction_mode():
    # Every driver at once through one pool of 5: asyncpg's statement cache, psycopg 3 with
    # prepare_threshold=0, node-postgres named queries, PHP PDO without emulation and
    # pgbench -M prepared. They share the servers (and the statements: same texts, some).
    init_pgbench()
    seconds = DRIVER_SECONDS
    with harness.Pgwarden(pg(), default_pool_size=5, max_client_conn=3000,
                          admin_users="scram_user") as pw:
        url = pw.url()
        procs = {
            "asyncpg": start(["/usr/bin/python3", os.path.join(HERE, "prepared_driver.py"),
                              "asyncpg", url, "200", str(seconds)]),
            "psycopg": start(["/usr/bin/python3", os.path.join(HERE, "prepared_driver.py"),
                              "psycopg", url, "200", str(seconds)]),
            "node-postgres": start(["node", os.path.join(HERE, "node", "prepared.js")],
                                   {"PGW_URL": url, "PGW_CLIENTS": "200",
                                    "PGW_SECONDS": str(seconds),
                                    "NODE_PATH": os.path.join(HERE, "node_modules")}),
            "pgbench": start(["pgbench", "-n", "-S", "-M", "prepared", "-c", "100", "-j", "2",
                              "-T", str(int(seconds)), "-h", "127.0.0.1", "-p", str(pw.port),
                              "-U", "scram_user", "pgwarden_test"], {"PGPASSWORD": "scram_pw"}),
        }
        php_dsn = (f"pgsql:host=127.0.0.1;port={pw.port};dbname=pgwarden_test;"
                   f"user=scram_user;password=scram_pw")
        for i in range(8):
            procs[f"php-{i}"] = start(["php", os.path.join(HERE, "php", "prepared.php"), php_dsn,
                                       str(seconds), str(i)])
        peak = 0
        deadline = seconds + 120
        while any(p.poll() is None for p in procs.values()):
            peak = max(peak, pg().backend_count(user="scram_user"))
            time.sleep(0.5)
            deadline -= 0.5
            assert deadline > 0, "drivers did not finish"
        for name, proc in procs.items():
            if name == "pgbench":
                out, err = proc.communicate()
                assert proc.returncode == 0, out + err
                assert "number of failed transactions: 0" in out or "failed" not in out, out
                processed = int(re.search(
                    r"number of transactions actually processed: (\d+)", out).group(1))
                assert processed >= 100, out
                print(f"  pgbench -M prepared: {processed} transactions")
                continue
            tally = tally_of(name, proc, 10)
            # Every client ran at least one statement (and all of them were right).
            assert tally["ops"] >= (1 if name.startswith("php") else 200), (name, tally)
            print(f"  {name}: {tally['ops']} statements, 0 errors")
        assert 0 < peak <= 5, peak
        console = console_of(pw, "scram_user")
        stats = next(r for r in show(console, "STATS") if r["database"] == "pgwarden_test")
        # Clients parsed their statements once per connection; servers far fewer times.
        assert stats["total_bind_count"] > 10000, stats
        assert 0 < stats["total_server_parse_count"] < stats["total_client_parse_count"], stats
        servers = show(console, "SERVERS")
        assert servers and all(0 < s["prepared_statements"] <= 200 for s in servers), servers
        console.close()


# --- Eviction, Close, DEALLOCATE ALL, a lost server, pipelines


def test_eviction_keeps_each_server_within_max_prepared_statements():
    with trust(max_prepared_statements=2, default_pool_size=1) as pw:
        a, b = raw_client(pw), raw_client(pw)
        for c in (a, b):
            for k in range(10):
                types, errors, _ = replies(c, parse(f"s{k}", f"SELECT {k} + $1::int", (23,)), SYNC)
                assert types == "1Z" and not errors, (types, errors)
        for round_ in range(3):
            for k in range(10):
                for c, base in ((a, 100), (b, 200)):
                    types, errors, got = replies(c, bind(f"s{k}", [str(base)]), execute(), SYNC)
                    assert not errors, errors
                    assert types == "2DCZ", types
                    assert data_values(got) == [str(base + k)]
        # The one server holds at most 2 statements of pgwarden's.
        types, errors, got = replies(a, message(b"Q", b"SELECT count(*) FROM pg_prepared_statements"
                                                b" WHERE name LIKE 'pgwarden_%'\0"))
        assert data_values(got) == ["2"], got
        console = console_of(pw)
        clients = {r["id"]: r for r in show(console, "CLIENTS")}
        assert sorted(r["prepared_statements"] for r in clients.values()
                      if r["database"] == "pgwarden_test") == [10, 10], clients
        assert [s["prepared_statements"] for s in show(console, "SERVERS")] == [2]
        console.close()
        a.close()
        b.close()


def test_close_deallocate_all_and_discard_all_from_the_client():
    with trust(default_pool_size=2) as pw:
        c = raw_client(pw)
        assert replies(c, parse("s1", "SELECT 1"), parse("s2", "SELECT 2"), SYNC)[0] == "11Z"
        # Close: CloseComplete, and the name is gone for this client only.
        assert replies(c, close_statement("s1"), SYNC)[0] == "3Z"
        types, errors, _ = replies(c, bind("s1"), execute(), SYNC)
        assert types == "EZ" and errors[0]["C"] == "26000", (types, errors)
        assert errors[0]["M"] == 'prepared statement "s1" does not exist'
        # Closing a name that does not exist is not an error (as in PostgreSQL).
        assert replies(c, close_statement("never"), SYNC)[0] == "3Z"
        # s2 still works, then DEALLOCATE ALL as SQL drops it.
        types, errors, got = replies(c, bind("s2"), execute(), SYNC)
        assert types == "2DCZ" and data_values(got) == ["2"], types
        assert replies(c, message(b"Q", b"DEALLOCATE ALL\0"))[0] == "CZ"
        types, errors, _ = replies(c, bind("s2"), execute(), SYNC)
        assert errors and errors[0]["C"] == "26000", (types, errors)
        # The name can be prepared again, with another text; DISCARD ALL drops it too.
        assert replies(c, parse("s2", "SELECT 22"), bind("s2"), execute(), SYNC)[0] == "12DCZ"
        assert replies(c, message(b"Q", b"DISCARD ALL\0"))[0] == "CZ"
        types, errors, _ = replies(c, describe_statement("s2"), SYNC)
        assert errors and errors[0]["C"] == "26000", (types, errors)
        c.close()


def test_a_second_parse_of_a_name_fails_as_in_postgresql():
    with trust() as pw:
        c = raw_client(pw)
        assert replies(c, parse("dup", "SELECT 1"), SYNC)[0] == "1Z"
        # The batch fails at the second Parse: its Bind and Execute are skipped up to Sync.
        types, errors, _ = replies(c, parse("dup", "SELECT 2"), bind("dup"), execute(), SYNC)
        assert types == "EZ", types
        assert errors[0]["C"] == "42P05" and errors[0]["M"] == 'prepared statement "dup" already exists'
        types, errors, got = replies(c, bind("dup"), execute(), SYNC)
        assert types == "2DCZ" and data_values(got) == ["1"], (types, errors)
        c.close()


def test_names_stay_with_their_client():
    # Two clients, one server: the same name means different statements, and pgwarden's own
    # names cannot be used to reach another client's statement.
    with trust(default_pool_size=1) as pw:
        a, b = raw_client(pw), raw_client(pw)
        assert replies(a, parse("s", "SELECT 'a'"), SYNC)[0] == "1Z"
        assert replies(b, parse("s", "SELECT 'b'"), SYNC)[0] == "1Z"
        assert data_values(replies(a, bind("s"), execute(), SYNC)[2]) == ["a"]
        assert data_values(replies(b, bind("s"), execute(), SYNC)[2]) == ["b"]
        names = data_values(replies(a, message(b"Q", b"SELECT name FROM pg_prepared_statements "
                                               b"ORDER BY name\0"))[2])
        assert len(names) == 2 and all(n.startswith("pgwarden_") for n in names), names
        for name in names:
            types, errors, _ = replies(b, bind(name), execute(), SYNC)
            assert types == "EZ" and errors[0]["C"] == "26000", (types, errors)
            assert errors[0]["M"] == f'prepared statement "{name}" does not exist'
            types, errors, _ = replies(b, describe_statement(name), SYNC)
            assert errors and errors[0]["C"] == "26000", (types, errors)
        a.close()
        b.close()


def test_statements_survive_a_lost_server():
    with trust(default_pool_size=1) as pw:
        c = raw_client(pw)
        assert replies(c, parse("s", "SELECT $1::int * 3", (23,)), SYNC)[0] == "1Z"
        pid = data_values(replies(c, message(b"Q", b"SELECT pg_backend_pid()\0"))[2])[0]
        pg().sql(f"SELECT pg_terminate_backend({pid})")
        harness.wait_until(lambda: pg().backend_count(user="app_user") == 0, 5,
                           what="the backend to go")
        # The next Bind goes to a new server, where pgwarden prepares the statement first.
        types, errors, got = replies(c, bind("s", ["14"]), execute(), SYNC)
        assert not errors and types == "2DCZ" and data_values(got) == ["42"], (types, errors)
        c.close()


def test_parse_error_inside_a_pipeline():
    with trust(default_pool_size=1) as pw:
        c = raw_client(pw)
        types, errors, got = replies(
            c, parse("ok", "SELECT 1"), parse("bad", "SELEC 2"), bind("bad"), execute(),
            parse("skipped", "SELECT 3"), SYNC)
        # PostgreSQL: the first Parse completes, the second fails, the rest is skipped.
        assert types == "1EZ", types
        assert errors[0]["C"] == "42601", errors
        # "ok" exists, "skipped" and "bad" do not (their Parse never ran).
        assert data_values(replies(c, bind("ok"), execute(), SYNC)[2]) == ["1"]
        for name in ("bad", "skipped"):
            types, errors, _ = replies(c, bind(name), execute(), SYNC)
            assert errors and errors[0]["C"] == "26000", (name, types, errors)
        # The names can be prepared now, and the server's LRU agrees with the server.
        assert replies(c, parse("bad", "SELECT 2"), parse("skipped", "SELECT 3"), SYNC)[0] == "11Z"
        assert data_values(replies(c, bind("bad"), execute(), bind("skipped"), execute(),
                                   SYNC)[2]) == ["2", "3"]
        c.close()


def test_error_before_the_sync_is_sent():
    # The client sends Sync only after seeing the error (as psycopg's pipeline may): the
    # messages in between are skipped by PostgreSQL, and by pgwarden's bookkeeping.
    with trust(default_pool_size=1) as pw:
        c = raw_client(pw)
        c.send(parse("x", "SELEC") + message(b"H"))
        got = c.read_until(types=(b"E",))
        assert got[-1][0] == b"E"
        c.send(parse("y", "SELECT 9") + bind("y") + execute() + message(b"H"))
        types, errors, _ = replies(c, SYNC)
        assert types == "Z", types  # nothing for the skipped messages
        types, errors, _ = replies(c, bind("y"), execute(), SYNC)
        assert errors and errors[0]["C"] == "26000", (types, errors)
        assert replies(c, parse("y", "SELECT 9"), bind("y"), execute(), SYNC)[0] == "12DCZ"
        c.close()


def test_large_bind_streams_and_a_named_parse_over_1_mb_is_refused():
    with trust(default_pool_size=1) as pw:
        c = raw_client(pw)
        assert replies(c, parse("big", "SELECT length($1::text)", (25,)), SYNC)[0] == "1Z"
        # A 3 MB parameter: the Bind's names are mapped from its first bytes, the rest streams.
        types, errors, got = replies(c, bind("big", ["x" * (3 << 20)]), execute(), SYNC)
        assert types == "2DCZ" and data_values(got) == [str(3 << 20)], (types, errors)
        # A named Parse must be read whole to be mapped; over 1 MB the client is told why.
        types, errors, _ = replies(c, parse("huge", "SELECT '" + "y" * (2 << 20) + "'"), SYNC)
        assert types == "E" and errors[0]["C"] == "54000", (types, errors)
        assert "larger than 1 MB" in errors[0]["M"] and "H" in errors[0], errors
        assert c.read_message() is None  # FATAL: the connection closes
        # An unnamed Parse of that size is not mapped, and works.
        d = raw_client(pw)
        types, errors, got = replies(d, parse("", "SELECT length('" + "y" * (2 << 20) + "')"),
                                     bind(""), execute(), SYNC)
        assert types == "12DCZ" and data_values(got) == [str(2 << 20)], (types, errors)
        d.close()


def test_max_prepared_statements_zero_passes_names_through():
    with trust(max_prepared_statements=0, default_pool_size=1) as pw:
        c = raw_client(pw)
        assert replies(c, parse("plain", "SELECT 5"), SYNC)[0] == "1Z"
        names = data_values(replies(c, message(b"Q", b"SELECT name FROM pg_prepared_statements"
                                               b"\0"))[2])
        assert names == ["plain"], names
        console = console_of(pw)
        stats = next(r for r in show(console, "STATS") if r["database"] == "pgwarden_test")
        assert stats["total_client_parse_count"] == 0, stats
        console.close()
        c.close()


if __name__ == "__main__":
    harness.main(globals())
