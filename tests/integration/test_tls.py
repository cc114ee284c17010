#!/usr/bin/python3
"""TLS on both sides (docs/configuration.md#tls, docs/security.md): client_tls_sslmode against
libpq's sslmode with psycopg, psql, asyncpg and node-postgres; verify-ca/verify-full from the
client's side; client certificates and auth_type = cert; certificate reload under load with no
failed transaction; a bad certificate file at reload keeps the old one; server_tls_sslmode
against a PostgreSQL with ssl = on: require, verify-full with its CA, a wrong CA and a wrong
host name refused, cancels over a TLS server connection."""
import asyncio
import os
import shutil
import subprocess
import threading
import time

import harness
from certs import Certs
from common import pg, show

_certs = None


def certs():
    global _certs
    if _certs is None:
        _certs = Certs(os.path.join(pg().dir, "certs"))
    return _certs


def tls_pgwarden(mode="require", **settings):
    c = certs()
    cert, key = c.server
    return harness.Pgwarden(pg(), client_tls_sslmode=mode, client_tls_cert_file=cert,
                            client_tls_key_file=key, **settings)


def admin(pw):
    """The console over the Unix socket as "pgbouncer" (no password: same OS user)."""
    import psycopg
    return psycopg.connect(host=pw.dir, port=pw.port, dbname="pgbouncer", user="pgbouncer",
                           autocommit=True)


def connect(pw, **params):
    import psycopg
    return psycopg.connect(pw.dsn(**params), autocommit=True)


def outcome(pw, sslmode, **params):
    """'tls', 'clear' or the error text of a psycopg login with this sslmode."""
    import psycopg
    try:
        with connect(pw, sslmode=sslmode, **params) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
            return "tls" if conn.pgconn.ssl_in_use else "clear"
    except psycopg.OperationalError as e:
        return str(e)


# client_tls_sslmode -> the client's sslmode -> what happens, as PostgreSQL behaves: a server
# without TLS answers 'N', which prefer accepts and require refuses (libpq's text: "does not
# support SSL"); a server that requires TLS refuses clear clients with a FATAL.
SSLMODE_MATRIX = {
    "disable": {"disable": "clear", "prefer": "clear", "require": "does not support SSL"},
    "allow": {"disable": "clear", "prefer": "tls", "require": "tls"},
    "prefer": {"disable": "clear", "prefer": "tls", "require": "tls"},
    "require": {"disable": "SSL required", "prefer": "tls", "require": "tls"},
}


def test_client_sslmode_matrix():
    for server_mode, by_client in SSLMODE_MATRIX.items():
        with tls_pgwarden(server_mode) as pw:
            for client_mode, want in by_client.items():
                got = outcome(pw, client_mode)
                assert want in got, (server_mode, client_mode, got)
            if server_mode == "require":
                # Over the Unix socket TLS is neither offered nor required.
                import psycopg
                with psycopg.connect(host=pw.dir, port=pw.port, dbname="pgwarden_test",
                                     user="scram_user", password="scram_pw") as conn:
                    assert not conn.pgconn.ssl_in_use
                # The console shows each client's TLS version and cipher.
                with connect(pw, sslmode="require") as conn, admin(pw) as console:
                    mine = conn.pgconn.backend_pid
                    assert conn.execute("SELECT 1").fetchone()
                    rows = [r for r in show(console, "CLIENTS") if r["user"] == "scram_user"]
                    assert rows and all(r["tls"].startswith("TLSv1.3/") for r in rows), rows
                    assert mine


def psql_outcome(pw, sslmode):
    """'tls', 'clear' or the error text of a psql login with this sslmode."""
    result = harness.run(["psql", "-X", "-A", "-t", "-d", pw.dsn(sslmode=sslmode), "-c",
                          "\\conninfo"], check=False)
    if result.returncode != 0:
        return "error: " + result.stderr.strip()
    return "tls" if "SSL connection" in result.stdout else "clear"


def asyncpg_outcome(pw, sslmode):
    """The same with asyncpg, whose ssl= takes libpq's mode names."""
    import asyncpg

    async def attempt():
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=pw.port, user="scram_user",
                                         password="scram_pw", database="pgwarden_test",
                                         ssl=sslmode, timeout=10, statement_cache_size=0)
        except Exception as e:  # asyncpg's own refusals are not all PostgresErrors
            return f"error: {e}"
        try:
            assert await conn.fetchval("SELECT 1") == 1
            return "tls" if conn._transport.get_extra_info("ssl_object") else "clear"
        finally:
            await conn.close()
    return asyncio.run(attempt())


def node_outcome(pw, sslmode):
    here = os.path.dirname(os.path.abspath(__file__))
    # node-postgres verifies the certificate for sslmode=require; the test CA is not the
    # system's, so verification is switched off for this process.
    env = {"PGW_URL": pw.url() + f"?sslmode={sslmode}", "NODE_TLS_REJECT_UNAUTHORIZED": "0",
           "NODE_PATH": os.path.join(here, "node_modules")}
    result = harness.run(["node", os.path.join(here, "node", "tls_mode.js")], env=env,
                         timeout=60)
    return result.stdout.strip()


def test_sslmode_matrix_for_psql_asyncpg_and_node():
    """Each client_tls_sslmode against each client's sslmode, with psql, asyncpg and
    node-postgres (node-postgres has no prefer): TLS, clear, or a refusal where PostgreSQL
    would refuse (a FATAL "SSL required" from pgwarden, or the client's own "server does not
    support SSL", in each client's words)."""
    for server_mode, by_client in SSLMODE_MATRIX.items():
        with tls_pgwarden(server_mode) as pw:
            for client_mode, want in by_client.items():
                outcomes = {"psql": psql_outcome(pw, client_mode),
                            "asyncpg": asyncpg_outcome(pw, client_mode)}
                if client_mode != "prefer":
                    outcomes["node"] = node_outcome(pw, client_mode)
                for client, got in outcomes.items():
                    if want in ("tls", "clear"):
                        assert got == want, (server_mode, client_mode, client, got)
                    else:
                        assert got.startswith("error"), (server_mode, client_mode, client, got)
                        if want == "SSL required":  # pgwarden's own FATAL, the same for all
                            assert want in got, (server_mode, client_mode, client, got)


def test_client_verifies_pgwarden():
    c = certs()
    with tls_pgwarden("require") as pw:
        # Signed by the CA the client trusts, naming 127.0.0.1 and localhost.
        assert outcome(pw, "verify-full", sslrootcert=c.path("ca.crt")) == "tls"
        # Another CA: refused by the client.
        got = outcome(pw, "verify-ca", sslrootcert=c.path("other_ca.crt"))
        assert "certificate verify failed" in got, got
    cert, key = c.server_elsewhere
    with harness.Pgwarden(pg(), client_tls_sslmode="require", client_tls_cert_file=cert,
                          client_tls_key_file=key) as pw:
        # The right CA, but a certificate for db.example.com: verify-ca passes, verify-full
        # refuses the wrong host name.
        assert outcome(pw, "verify-ca", sslrootcert=c.path("ca.crt")) == "tls"
        got = outcome(pw, "verify-full", sslrootcert=c.path("ca.crt"))
        assert "does not match host name" in got or "127.0.0.1" in got, got


def test_psql_asyncpg_and_node_over_tls():
    with tls_pgwarden("require") as pw:
        out = harness.psql(pw.dsn(sslmode="require"),
                           "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").stdout
        # The server side of this test's pgwarden is in clear (ssl is off on PostgreSQL here
        # unless test_server_tls ran first): what matters is that psql got through TLS.
        assert out.strip() in ("t", "f"), out
        out = harness.run(["psql", "-X", "-A", "-t", "-d", pw.dsn(sslmode="require"), "-c",
                           "\\conninfo"]).stdout
        assert "SSL connection" in out, out

        import asyncpg
        import ssl

        async def run_asyncpg():
            context = ssl.create_default_context(cafile=certs().path("ca.crt"))
            conn = await asyncpg.connect(host="127.0.0.1", port=pw.port, user="scram_user",
                                         password="scram_pw", database="pgwarden_test",
                                         ssl=context, statement_cache_size=0)
            try:
                assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
            finally:
                await conn.close()
        asyncio.run(run_asyncpg())

        # node-postgres verifies the certificate for sslmode=require: the test CA is not the
        # system's, so verification is switched off for this process.
        here = os.path.dirname(os.path.abspath(__file__))
        env = {"PGW_URL": pw.url() + "?sslmode=require", "NODE_TLS_REJECT_UNAUTHORIZED": "0",
               "NODE_PATH": os.path.join(here, "node_modules")}
        result = harness.run(["node", os.path.join(here, "node", "basic.js")], env=env,
                             timeout=120)
        assert "node-postgres ok" in result.stdout


def test_no_session_resumption():
    # As PostgreSQL: no TLS 1.3 session tickets (libpq never resumes; they would cost every
    # login CPU on both sides). The tickets would come right after the handshake, before
    # pgwarden's first message, so once that message is read the client has all it will get.
    import ssl
    import struct
    with tls_pgwarden("require") as pw:
        client = harness.RawClient(pw.port)
        client.send(struct.pack("!ii", 8, 80877103))  # SSLRequest
        assert client.sock.recv(1) == b"S"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.sock = context.wrap_socket(client.sock)
        try:
            assert client.sock.version() == "TLSv1.3", client.sock.version()
            client.send_startup({"user": "scram_user", "database": "pgwarden_test"})
            kind, _ = client.read_message()
            assert kind == b"R", kind  # AuthenticationSASL
            assert not client.sock.session.has_ticket, "pgwarden sent a session ticket"
        finally:
            client.close()


def test_client_certificates_and_cert_auth():
    c = certs()
    scram_cert, scram_key = c.client("scram_user")
    app_cert, app_key = c.client("app_user")
    other_cert, other_key = c.client("scram_user", ca="other_ca")
    with tls_pgwarden("require", client_tls_ca_file=c.path("ca.crt"), auth_type="cert") as pw:
        # The CN names the user: in, with no password asked.
        assert outcome(pw, "require", password="", sslcert=scram_cert, sslkey=scram_key) == "tls"
        # A certificate for another user.
        got = outcome(pw, "require", password="", sslcert=app_cert, sslkey=app_key)
        assert 'certificate authentication failed for user "scram_user"' in got, got
        # No certificate.
        got = outcome(pw, "require", password="")
        assert "certificate authentication failed" in got, got
        # A certificate from a CA pgwarden does not trust: the handshake fails.
        got = outcome(pw, "require", password="", sslcert=other_cert, sslkey=other_key)
        assert "certificate" in got or "alert" in got, got
    # verify-ca: a client without a certificate does not get past the handshake.
    with tls_pgwarden("verify-ca", client_tls_ca_file=c.path("ca.crt")) as pw:
        got = outcome(pw, "require")
        assert got not in ("tls", "clear"), got
        assert outcome(pw, "require", sslcert=scram_cert, sslkey=scram_key) == "tls"
    # hba: hostssl lines for TLS clients, hostnossl for the others.
    pw = tls_pgwarden("prefer", auth_type="hba", auth_hba_file="hba.conf",
                      client_tls_ca_file=c.path("ca.crt"))
    with open(os.path.join(pw.dir, "ident.conf"), "w") as f:
        f.write("certs scram_user md5_user\n")  # scram_user's certificate may be md5_user
    pw.settings["auth_ident_file"] = "ident.conf"
    with open(os.path.join(pw.dir, "hba.conf"), "w") as f:
        f.write("hostssl pgwarden_test md5_user 127.0.0.1/32 cert map=certs\n"
                "hostssl pgwarden_test scram_user 127.0.0.1/32 cert\n"
                "hostnossl pgwarden_test scram_user 127.0.0.1/32 reject\n"
                "hostnossl pgwarden_test app_user 127.0.0.1/32 md5\n")
    with pw:
        assert outcome(pw, "require", password="", sslcert=scram_cert, sslkey=scram_key) == "tls"
        # Through the map: scram_user's certificate logs in as md5_user, app_user's does not.
        assert outcome(pw, "require", user="md5_user", password="", sslcert=scram_cert,
                       sslkey=scram_key) == "tls"
        got = outcome(pw, "require", user="md5_user", password="", sslcert=app_cert,
                      sslkey=app_key)
        assert "certificate authentication failed" in got, got
        got = outcome(pw, "disable")
        assert "pg_hba.conf rejects connection" in got and "no encryption" in got, got
        got = outcome(pw, "require", user="app_user")
        assert 'no pg_hba.conf entry for host "127.0.0.1", user "app_user"' in got, got
        assert "SSL encryption" in got, got
        assert outcome(pw, "disable", user="app_user") == "clear"


def test_certificate_reload_under_load_and_bad_files():
    c = certs()
    live_cert = os.path.join(c.dir, "live.crt")
    live_key = os.path.join(c.dir, "live.key")
    shutil.copy(c.server[0], live_cert)
    shutil.copy(c.server[1], live_key)
    with harness.Pgwarden(pg(), client_tls_sslmode="require", client_tls_cert_file=live_cert,
                          client_tls_key_file=live_key, auth_type="trust",
                          pool_mode="transaction") as pw:
        assert outcome(pw, "verify-ca", sslrootcert=c.path("ca.crt")) == "tls"
        # pgbench over TLS, a new connection per transaction (every one a handshake), while the
        # certificate is replaced with one from the other CA and reloaded.
        env = dict(os.environ, PGPASSWORD="", PGSSLMODE="require")
        script = os.path.join(pw.dir, "select.sql")
        with open(script, "w") as f:
            f.write("SELECT 1;\n")
        bench = subprocess.Popen(
            ["pgbench", "-n", "-C", "-c", "4", "-T", "6", "-f", script, "-h", "127.0.0.1",
             "-p", str(pw.port), "-U", "trust_user", "pgwarden_test"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        shutil.copy(c.server_other[0], live_cert)
        shutil.copy(c.server_other[1], live_key)
        pw.reload()
        output, _ = bench.communicate(timeout=60)
        assert bench.returncode == 0, output
        assert "number of failed transactions: 0" in output, output
        processed = int(output.split("number of transactions actually processed: ")[1].split()[0])
        assert processed > 20, output
        # New connections get the new certificate.
        assert outcome(pw, "verify-ca", sslrootcert=c.path("other_ca.crt")) == "tls"
        got = outcome(pw, "verify-ca", sslrootcert=c.path("ca.crt"))
        assert "certificate verify failed" in got, got
        # A broken key file: the reload logs why and the certificate in use stays.
        kept = connect(pw, sslmode="require", user="trust_user")
        with open(live_key, "w") as f:
            f.write("not a key\n")
        pw.reload()
        harness.wait_until(lambda: "TLS: client_tls_key_file" in pw.log(),
                           what="the failed TLS reload")
        assert "previous TLS settings stay in use" in pw.log()
        assert outcome(pw, "verify-ca", sslrootcert=c.path("other_ca.crt")) == "tls"
        assert kept.execute("SELECT 5").fetchone()[0] == 5
        kept.close()
        # SET on the console takes one key at a time (a key, then its certificate): a context
        # that does not build yet is logged and the certificate in use stays.
        with admin(pw) as console:
            console.execute("SET client_tls_cert_file = '/nonexistent.crt'")
        harness.wait_until(lambda: "TLS: client_tls_cert_file /nonexistent.crt" in pw.log(),
                           what="the failed SET in the log")
        assert outcome(pw, "verify-ca", sslrootcert=c.path("other_ca.crt")) == "tls"


def enable_server_ssl(cert_pair):
    """ssl = on on the test PostgreSQL with `cert_pair`, and a reload."""
    p = pg()
    cert, key = cert_pair
    for source, name in ((cert, "server.crt"), (key, "server.key")):
        target = os.path.join(p.data, name)
        shutil.copy(source, target)
        if os.geteuid() == 0:
            shutil.chown(target, "postgres")
        os.chmod(target, 0o600)
    p.sql("ALTER SYSTEM SET ssl = on")
    p.sql("SELECT pg_reload_conf()")
    time.sleep(0.5)


def server_ssl_of(pw, **params):
    """Whether pgwarden's server connection for this client uses TLS (pg_stat_ssl)."""
    with connect(pw, **params) as conn:
        return conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


def test_server_tls():
    import psycopg
    c = certs()
    enable_server_ssl(c.server)
    # prefer (the default) uses TLS once the server offers it.
    with harness.Pgwarden(pg()) as pw:
        assert server_ssl_of(pw) is True
        with admin(pw) as console:
            servers = show(console, "SERVERS")
            assert servers and all(s["tls"].startswith("TLSv1.") for s in servers), servers
    with harness.Pgwarden(pg(), server_tls_sslmode="disable") as pw:
        assert server_ssl_of(pw) is False
    # verify-full by name and by address, against the server's CA.
    for host in ("localhost", "127.0.0.1"):
        databases = {"pgwarden_test": f"host={host} port={pg().port} dbname=pgwarden_test"}
        with harness.Pgwarden(pg(), databases=databases, server_tls_sslmode="verify-full",
                              server_tls_ca_file=c.path("ca.crt")) as pw:
            assert server_ssl_of(pw) is True
            # A cancel still reaches the server (sent in clear, as libpq 15 does).
            with connect(pw) as conn:
                harness.cancel_sleep(conn, after=0.3, within=5)
    # A CA that did not sign the server's certificate: the login fails, and says why.
    with harness.Pgwarden(pg(), server_tls_sslmode="verify-ca",
                          server_tls_ca_file=c.path("other_ca.crt"),
                          server_connect_timeout="3") as pw:
        try:
            connect(pw).close()
            raise AssertionError("connected through a server with an untrusted certificate")
        except psycopg.OperationalError:
            pass
        harness.wait_until(lambda: "certificate verify failed" in pw.log(),
                           what="the verify failure in the log")
    # The right CA, a certificate for another host name: verify-ca passes, verify-full fails.
    enable_server_ssl(c.server_elsewhere)
    try:
        with harness.Pgwarden(pg(), server_tls_sslmode="verify-ca",
                              server_tls_ca_file=c.path("ca.crt")) as pw:
            assert server_ssl_of(pw) is True
        with harness.Pgwarden(pg(), server_tls_sslmode="verify-full",
                              server_tls_ca_file=c.path("ca.crt")) as pw:
            try:
                connect(pw).close()
                raise AssertionError("verify-full accepted a certificate for another host")
            except psycopg.OperationalError:
                pass
            harness.wait_until(lambda: "certificate verify failed" in pw.log(),
                               what="the host name failure in the log")
    finally:
        enable_server_ssl(c.server)
    # require against a server without TLS: no connection.
    pg().sql("ALTER SYSTEM SET ssl = off")
    pg().sql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    with harness.Pgwarden(pg(), server_tls_sslmode="require", server_connect_timeout="3") as pw:
        try:
            connect(pw).close()
            raise AssertionError("require connected in clear")
        except psycopg.OperationalError:
            pass
        harness.wait_until(lambda: "server does not support TLS" in pw.log(),
                           what="the refusal in the log")


if __name__ == "__main__":
    harness.main(globals())
