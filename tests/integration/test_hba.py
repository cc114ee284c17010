#!/usr/bin/python3
"""auth_type = hba (docs/configuration.md#auth_hba_file): the first matching line of
auth_hba_file picks the method, by connection type, database, user and address; no match and
`reject` get PostgreSQL's 28000 texts; peer on the Unix socket; @file lists; reload."""
import os
import struct
import time

import harness
from common import pg

ME = __import__("pwd").getpwuid(os.getuid()).pw_name  # this process's OS user (peer)

HBA = """\
# type   database       user            address                  method
local    pgbouncer      {me}                                     peer
local    all            app_user                                 peer
host     all            md5_user        127.0.0.1/32             reject
host     pgwarden_test  scram_user      127.0.0.1/32             scram-sha-256
host     pgwarden_test  app_user        127.0.0.1/32             md5
host     pgwarden_test  password_user   127.0.0.1  255.255.255.255  password
host     pgwarden_test  @trusted.txt    127.0.0.0/8              trust
host     all            all             ::1/128                  reject
"""


def ipv6_loopback():
    """Whether this machine has ::1 (some containers run without IPv6)."""
    import socket
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def start(hba_text=HBA):
    listen = "127.0.0.1,::1" if ipv6_loopback() else "127.0.0.1"
    pw = harness.Pgwarden(pg(), auth_type="hba", auth_hba_file="hba.conf",
                          admin_users=ME, listen_addr=listen)
    with open(os.path.join(pw.dir, "hba.conf"), "w") as f:
        f.write(hba_text.replace("{me}", ME))
    with open(os.path.join(pw.dir, "trusted.txt"), "w") as f:
        f.write("# users trusted from this host\ntrust_user\n")
    return pw


def auth_request(pw, user, db="pgwarden_test", host="127.0.0.1"):
    """The server's first answer to a startup: ('R', code) or ('E', fields)."""
    client = harness.RawClient(pw.port, host=host)
    client.send_startup({"user": user, "database": db})
    mtype, body = client.read_message()
    client.close()
    if mtype == b"R":
        return "R", struct.unpack("!I", body[:4])[0]
    return mtype.decode(), harness.error_fields(body)


def test_the_first_matching_line_picks_the_method():
    with start() as pw:
        # AuthenticationSASL (10), MD5Password (5), CleartextPassword (3), Ok (0).
        assert auth_request(pw, "scram_user") == ("R", 10)
        assert auth_request(pw, "app_user") == ("R", 5)
        assert auth_request(pw, "password_user") == ("R", 3)
        assert auth_request(pw, "trust_user") == ("R", 0)  # listed in @trusted.txt
        # And the methods work end to end with real clients.
        for user, password in [("scram_user", "scram_pw"), ("app_user", "app_pw"),
                               ("password_user", "password_pw")]:
            out = harness.psql(pw.dsn(user=user, password=password), "SELECT current_user")
            assert out.stdout.strip() == user, out
        # A line with `reject`.
        kind, error = auth_request(pw, "md5_user")
        assert kind == "E" and error["C"] == "28000" and error["S"] == "FATAL", error
        assert error["M"] == ('pg_hba.conf rejects connection for host "127.0.0.1", '
                              'user "md5_user", database "pgwarden_test", no encryption'), error
        # No line for this database.
        kind, error = auth_request(pw, "scram_user", db="otherdb")
        assert kind == "E" and error["C"] == "28000", error
        assert error["M"] == ('no pg_hba.conf entry for host "127.0.0.1", user "scram_user", '
                              'database "otherdb", no encryption'), error
        # IPv6: the ::1 line rejects everyone.
        if ipv6_loopback():
            kind, error = auth_request(pw, "scram_user", host="::1")
            assert kind == "E" and error["M"].startswith(
                'pg_hba.conf rejects connection for host "::1"'), error
        else:
            print("no IPv6 loopback on this machine: the ::1 case is not run")
        # psql shows the FATAL, not a hang or a reset.
        out = harness.run(["psql", "-X", "-d", pw.dsn(user="md5_user", password="md5_pw"),
                           "-c", "SELECT 1"], check=False)
        assert out.returncode != 0 and "pg_hba.conf rejects connection" in out.stderr, out


def test_peer_on_the_unix_socket():
    with start() as pw:
        # The console user named like this process's OS user passes peer; app_user does not.
        out = harness.run(["psql", "-X", "-A", "-t", "-h", pw.dir, "-p", str(pw.port),
                           "-U", ME, "-d", "pgbouncer", "-c", "SHOW VERSION"])
        assert "pgwarden" in out.stdout, out
        client = harness.RawClient(0, sock=unix_socket(pw))
        client.send_startup({"user": "app_user", "database": "pgwarden_test"})
        error = harness.first_error(client.read_until((b"E",)))
        assert error and error["C"] == "28000", error
        assert error["M"] == 'Peer authentication failed for user "app_user"', error
        client.close()


def test_peer_with_an_ident_map():
    """map= on a peer line: the OS user may log in as the database users auth_ident_file maps
    it to, and as no other."""
    hba = ("local    pgbouncer      {me}          peer\n"
           "local    pgwarden_test  all           peer map=apps\n")
    pw = harness.Pgwarden(pg(), auth_type="hba", auth_hba_file="hba.conf",
                          auth_ident_file="ident.conf", admin_users=ME)
    with open(os.path.join(pw.dir, "hba.conf"), "w") as f:
        f.write(hba.replace("{me}", ME))
    with open(os.path.join(pw.dir, "ident.conf"), "w") as f:
        f.write(f"# MAP  SYSTEM-USER  DATABASE-USER\napps  {ME}  app_user\napps  /^{ME}$  trust_user\n")
    with pw:
        for user in ("app_user", "trust_user"):
            client = harness.RawClient(0, sock=unix_socket(pw))
            client.send_startup({"user": user, "database": "pgwarden_test"})
            messages = client.read_until()
            assert messages[-1][0] == b"Z", (user, messages)
            client.close()
        client = harness.RawClient(0, sock=unix_socket(pw))
        client.send_startup({"user": "scram_user", "database": "pgwarden_test"})
        error = harness.first_error(client.read_until((b"E",)))
        assert error["M"] == 'Peer authentication failed for user "scram_user"', error
        client.close()
        harness.wait_until(lambda: "ident map: apps does not have a match" in pw.log(),
                           what="the log line")


def unix_socket(pw):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(pw.dir, f".s.PGSQL.{pw.port}"))
    return s


def test_reload_applies_to_new_logins():
    with start() as pw:
        import psycopg
        kept = psycopg.connect(pw.dsn(user="scram_user", password="scram_pw"), autocommit=True)
        with open(os.path.join(pw.dir, "hba.conf"), "w") as f:
            f.write(HBA.replace("{me}", ME).replace(
                "scram_user      127.0.0.1/32             scram-sha-256",
                "scram_user      127.0.0.1/32             reject"))
        pw.reload()
        harness.wait_until(lambda: auth_request(pw, "scram_user")[0] == "E",
                           what="the reloaded hba file")
        # The connection made before goes on.
        assert kept.execute("SELECT 7").fetchone()[0] == 7
        # A file that does not parse is refused as a whole: the rules in force stay.
        with open(os.path.join(pw.dir, "hba.conf"), "w") as f:
            f.write("host all all 127.0.0.1/32 ident\n")
        pw.reload()
        harness.wait_until(lambda: "reload failed" in pw.log(), what="the failed reload")
        assert "ident" in pw.log()
        assert auth_request(pw, "app_user") == ("R", 5)
        kept.close()


if __name__ == "__main__":
    harness.main(globals())
