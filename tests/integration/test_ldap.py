#!/usr/bin/python3
"""The ldap method of auth_hba_file (docs/configuration.md#auth_hba_file) against a real slapd,
started here as an unprivileged process on a free loopback port with a throwaway directory:
simple bind, search+bind (anonymous and with a search DN, by attribute, by filter, by ldapurl),
user names that would shape the filter, ldaps and StartTLS, an LDAP server that is down or
silent (a refusal within the time limit while the worker's other clients go on), reload."""
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import harness
from common import pg

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=net"
PEOPLE = f"ou=people,{SUFFIX}"
HIDDEN = f"ou=hidden,{SUFFIX}"
SEARCHER = f"cn=searcher,{SUFFIX}"

# LDAP passwords differ from PostgreSQL's (harness.USERS): the LDAP server decides who logs in
# to pgwarden; pgwarden logs in to PostgreSQL with auth_file's password as always.
LDAP_PASSWORDS = {"scram_user": "ldap-scram", "app_user": "ldap-app", "md5_user": "ldap-md5"}

DIRECTORY = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: example
dc: example

dn: {PEOPLE}
objectClass: organizationalUnit
ou: people

dn: ou=other,{SUFFIX}
objectClass: organizationalUnit
ou: other

dn: {HIDDEN}
objectClass: organizationalUnit
ou: hidden

dn: {SEARCHER}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: searcher
userPassword: searcher-pw

dn: uid=scram_user,{PEOPLE}
objectClass: inetOrgPerson
uid: scram_user
cn: scram_user
sn: user
mail: scram@example.net
userPassword: {LDAP_PASSWORDS["scram_user"]}

dn: uid=md5_user,{PEOPLE}
objectClass: inetOrgPerson
uid: md5_user
cn: md5_user
sn: user
userPassword: {LDAP_PASSWORDS["md5_user"]}

dn: uid=md5_user,ou=other,{SUFFIX}
objectClass: inetOrgPerson
uid: md5_user
cn: md5_user
sn: twin
userPassword: {LDAP_PASSWORDS["md5_user"]}

dn: uid=app_user,{HIDDEN}
objectClass: inetOrgPerson
uid: app_user
cn: app_user
sn: user
userPassword: {LDAP_PASSWORDS["app_user"]}
"""


def slapd_user():
    """Who slapd runs as: this process's user, or when that is root a system user (slapd must
    not run as root here)."""
    if os.geteuid() != 0:
        return None
    for name in ("openldap", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise AssertionError("no unprivileged user to run slapd as")


class Slapd:
    """A slapd with an mdb database of DIRECTORY, listening on ldap:// (and with certificates on
    ldaps://) 127.0.0.1. Entries under ou=hidden can be found only by the searcher's DN."""

    def __init__(self, tls=None):
        self.dir = tempfile.mkdtemp(prefix="pgw-slapd-")
        self.port = harness.free_port()
        self.tls_port = harness.free_port() if tls else None
        self.tls = tls  # (ca, cert, key) or None
        self.logfile = os.path.join(self.dir, "slapd.log")
        self.proc = None

    def __enter__(self):
        try:
            self.start_fresh()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def as_user(self, cmd):
        user = slapd_user()
        return ["runuser", "-u", user.pw_name, "--"] + cmd if user else cmd

    def start_fresh(self):
        os.makedirs(os.path.join(self.dir, "db"))
        tls = ""
        if self.tls:
            ca, cert, key = (shutil.copy(path, self.dir) for path in self.tls)
            tls = f"TLSCACertificateFile {ca}\nTLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n"
        with open(os.path.join(self.dir, "slapd.conf"), "w") as f:
            f.write(f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {self.dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
{tls}
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
rootpw admin-pw
directory {self.dir}/db
access to attrs=userPassword
    by anonymous auth
    by self read
    by * none
access to dn.children="{HIDDEN}"
    by dn.exact="{SEARCHER}" read
    by anonymous auth
    by * none
access to * by * read
""")
        with open(os.path.join(self.dir, "directory.ldif"), "w") as f:
            f.write(DIRECTORY)
        user = slapd_user()
        if user:
            for root, dirs, files in os.walk(self.dir):
                for name in dirs + files:
                    os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        harness.run(self.as_user([SLAPADD, "-f", f"{self.dir}/slapd.conf",
                                  "-l", f"{self.dir}/directory.ldif"]))
        self.start()

    def urls(self):
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.tls_port:
            urls += f" ldaps://127.0.0.1:{self.tls_port}/"
        return urls

    def start(self):
        # -d 256: in the foreground (this process can stop it), the statistics (connections,
        # binds, searches, StartTLS) on stderr, into the log the tests read.
        self.log_handle = open(self.logfile, "a")
        self.proc = subprocess.Popen(
            self.as_user([SLAPD, "-f", f"{self.dir}/slapd.conf", "-h", self.urls(), "-d", "256"]),
            stdout=self.log_handle, stderr=subprocess.STDOUT)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"slapd exited with {self.proc.returncode}:\n{self.log()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        harness.wait_until(listening, 10, what="slapd to listen")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self):
        try:
            with open(self.logfile) as f:
                return f.read()
        except OSError:
            return ""

    def binds(self):
        return self.log().count(" BIND dn=")

    def cleanup(self):
        self.stop()
        if not harness.KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)


def ldap_line(slapd, users="all", **options):
    """An hba line for TCP clients from 127.0.0.1 with the ldap method and `options`."""
    options.setdefault("ldapserver", "127.0.0.1")
    options.setdefault("ldapport", str(slapd.port))
    words = " ".join(f'{name}="{value}"' for name, value in options.items())
    return f"host pgwarden_test {users} 127.0.0.1/32 ldap {words}\n"


SIMPLE = dict(ldapprefix="uid=", ldapsuffix=f",{PEOPLE}")


def start(hba_text, **settings):
    pw = harness.Pgwarden(pg(), auth_type="hba", auth_hba_file="hba.conf", **settings)
    write_hba(pw, hba_text)
    return pw


def write_hba(pw, text):
    with open(os.path.join(pw.dir, "hba.conf"), "w") as f:
        f.write(text)


def reload(pw, text):
    """Writes the hba file and reloads: the new rules (or the failure) are in force on return."""
    write_hba(pw, text)
    done = pw.log().count("configuration reloaded") + pw.log().count("reload failed")
    pw.reload()
    harness.wait_until(lambda: pw.log().count("configuration reloaded") +
                       pw.log().count("reload failed") > done, what="the reload")


def login(pw, user, password, db="pgwarden_test"):
    """Logs in with `password` in cleartext: ("ok", None) or ("E", the error's fields)."""
    client = harness.RawClient(pw.port)
    client.send_startup({"user": user, "database": db})
    mtype, body = client.read_message()
    if mtype != b"R" or struct.unpack("!I", body[:4])[0] != 3:
        client.close()
        return mtype.decode(), harness.error_fields(body) if mtype == b"E" else body
    data = password.encode() + b"\0"
    client.send(b"p" + struct.pack("!I", len(data) + 4) + data)
    messages = client.read_until((b"Z", b"E"))
    client.close()
    error = harness.first_error(messages)
    if error:
        return "E", error
    assert messages and messages[-1][0] == b"Z", messages
    return "ok", None


def assert_ldap_refused(pw, user, password, why):
    kind, error = login(pw, user, password)
    assert kind == "E", (kind, error)
    assert error["S"] == "FATAL" and error["C"] == "28000", error
    assert error["M"] == f'LDAP authentication failed for user "{user}"', error
    harness.wait_until(lambda: why in pw.log(), what=f"the log to say {why!r}")
    if password:
        assert password not in pw.log(), "a password reached the log"


def test_simple_bind():
    with Slapd() as slapd, start(ldap_line(slapd, **SIMPLE)) as pw:
        # PostgreSQL's question for ldap: the password in cleartext.
        client = harness.RawClient(pw.port)
        client.send_startup({"user": "scram_user", "database": "pgwarden_test"})
        mtype, body = client.read_message()
        client.close()
        assert (mtype, struct.unpack("!I", body[:4])[0]) == (b"R", 3), (mtype, body)
        # The LDAP password works (psql end to end); pgwarden logs in to PostgreSQL with the
        # auth_file password as usual.
        out = harness.psql(pw.dsn(user="scram_user", password=LDAP_PASSWORDS["scram_user"]),
                           "SELECT current_user")
        assert out.stdout.strip() == "scram_user", out
        # The bind was the DN made of prefix, user name and suffix.
        assert f'BIND dn="uid=scram_user,{PEOPLE}" method=128' in slapd.log()
        # A wrong password, even PostgreSQL's own: refused with PostgreSQL's text; the log says
        # why, without the password.
        assert_ldap_refused(pw, "scram_user", "scram_pw",
                            f'LDAP login failed for user "uid=scram_user,{PEOPLE}" on server '
                            f'"127.0.0.1": Invalid credentials')
        # A user the directory does not have.
        assert_ldap_refused(pw, "app_user", "whatever",
                            f'LDAP login failed for user "uid=app_user,{PEOPLE}"')
        # An empty password would be an unauthenticated bind, which LDAP servers accept: refused
        # without asking the server.
        binds = slapd.binds()
        assert_ldap_refused(pw, "scram_user", "", "empty password returned by client")
        assert slapd.binds() == binds, "the LDAP server was asked about an empty password"
        out = harness.run(["psql", "-X", "-d", pw.dsn(user="scram_user", password="nope"),
                           "-c", "SELECT 1"], check=False)
        assert out.returncode != 0 and \
            'LDAP authentication failed for user "scram_user"' in out.stderr, out


def test_search_bind():
    with Slapd() as slapd:
        hba = (ldap_line(slapd, users="app_user", ldapbasedn=HIDDEN, ldapbinddn=SEARCHER,
                         ldapbindpasswd="searcher-pw") +
               ldap_line(slapd, users="password_user", ldapbasedn=HIDDEN, ldapbinddn=SEARCHER,
                         ldapbindpasswd="wrong") +
               ldap_line(slapd, ldapbasedn=SUFFIX))  # anonymous, uid
        with start(hba) as pw:
            # Anonymous search by uid over the whole tree, then a bind as the entry found.
            out = harness.psql(pw.dsn(user="scram_user", password=LDAP_PASSWORDS["scram_user"]),
                               "SELECT current_user")
            assert out.stdout.strip() == "scram_user", out
            assert "SRCH base=\"dc=example,dc=net\" scope=2 deref=0 filter=\"(uid=scram_user)\"" \
                in slapd.log(), slapd.log()
            assert_ldap_refused(pw, "scram_user", "wrong",
                                f'LDAP login failed for user "uid=scram_user,{PEOPLE}"')
            # Nobody of that name (trust_user is not in the directory).
            assert_ldap_refused(pw, "trust_user", "whatever",
                                'LDAP user "trust_user" does not exist')
            # Two entries match: refused, whichever password.
            assert_ldap_refused(pw, "md5_user", LDAP_PASSWORDS["md5_user"],
                                'LDAP user "md5_user" is not unique')
            # ou=hidden is searchable by the search DN only: app_user's line binds as it.
            out = harness.psql(pw.dsn(user="app_user", password=LDAP_PASSWORDS["app_user"]),
                               "SELECT current_user")
            assert out.stdout.strip() == "app_user", out
            assert f'BIND dn="{SEARCHER}" method=128' in slapd.log()
            # A wrong ldapbindpasswd: the search cannot start.
            assert_ldap_refused(pw, "password_user", "whatever",
                                f'could not perform initial LDAP bind for ldapbinddn '
                                f'"{SEARCHER}" on server "127.0.0.1": Invalid credentials')
            # Without the search DN, the hidden entry is not found.
            reload(pw, ldap_line(slapd, ldapbasedn=HIDDEN))
            assert_ldap_refused(pw, "app_user", LDAP_PASSWORDS["app_user"],
                                'LDAP user "app_user" does not exist')
            # A search filter, and the same through an ldapurl (whose scope is sub here).
            reload(pw, ldap_line(slapd, ldapbasedn=SUFFIX,
                                 ldapsearchfilter="(|(uid=$username)(mail=$username))"))
            assert login(pw, "scram_user", LDAP_PASSWORDS["scram_user"]) == ("ok", None)
            assert 'filter="(|(uid=scram_user)(mail=scram_user))"' in slapd.log()
            url = f"ldap://127.0.0.1:{slapd.port}/{PEOPLE}?uid?sub"
            reload(pw, f'host pgwarden_test all 127.0.0.1/32 ldap ldapurl="{url}"\n')
            assert login(pw, "scram_user", LDAP_PASSWORDS["scram_user"]) == ("ok", None)
            assert f'SRCH base="{PEOPLE}" scope=2 deref=0 filter="(uid=scram_user)"' in \
                slapd.log()
            # A user found under another branch is not under this base DN.
            assert_ldap_refused(pw, "app_user", LDAP_PASSWORDS["app_user"],
                                'LDAP user "app_user" does not exist')


def test_user_names_that_would_shape_the_filter_are_refused():
    with Slapd() as slapd, start(ldap_line(slapd, ldapbasedn=SUFFIX)) as pw:
        # With the search unescaped, "*" would find every entry and ")(" start a new filter.
        # PostgreSQL refuses these names before searching; so does pgwarden, even with a
        # password that is right for some entry.
        searches = slapd.log().count(" SRCH ")
        for user in ("*", "scram_user)(uid=*", "*)(|(uid=*", "scram\\5f_user", "a/b"):
            assert_ldap_refused(pw, user, LDAP_PASSWORDS["scram_user"],
                                "invalid character in user name for LDAP authentication")
        assert slapd.log().count(" SRCH ") == searches, "a refused name reached the server"
        # The simple bind does not search: such a name is only a DN nobody has.
        reload(pw, ldap_line(slapd, **SIMPLE))
        assert_ldap_refused(pw, "*", LDAP_PASSWORDS["scram_user"],
                            f'LDAP login failed for user "uid=*,{PEOPLE}"')


class Blackhole:
    """A TCP port that takes connections and never answers: an LDAP server that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def test_a_dead_or_silent_ldap_server_is_a_refusal_not_a_hang():
    blackhole = Blackhole()
    try:
        with Slapd() as slapd:
            hba = (ldap_line(slapd, users="password_user", ldapport=str(blackhole.port),
                             **SIMPLE) +
                   ldap_line(slapd, **SIMPLE))
            # One worker: every client below shares its event loop.
            with start(hba, workers=1) as pw:
                import psycopg
                busy = psycopg.connect(pw.dsn(user="scram_user",
                                              password=LDAP_PASSWORDS["scram_user"]),
                                       autocommit=True)
                # While a login waits for the silent server, the worker's other client runs its
                # queries and another LDAP login (another server) goes through.
                latencies = []
                stop = threading.Event()

                def loop():
                    while not stop.is_set():
                        start_at = time.monotonic()
                        assert busy.execute("SELECT 1").fetchone()[0] == 1
                        latencies.append(time.monotonic() - start_at)
                        time.sleep(0.02)
                thread = threading.Thread(target=loop, daemon=True)
                thread.start()
                waited = {}

                def silent_login():
                    began = time.monotonic()
                    waited["result"] = login(pw, "password_user", "whatever")
                    waited["seconds"] = time.monotonic() - began
                waiting = threading.Thread(target=silent_login, daemon=True)
                waiting.start()
                time.sleep(1.0)
                began = time.monotonic()
                assert login(pw, "scram_user", LDAP_PASSWORDS["scram_user"]) == ("ok", None)
                other_login = time.monotonic() - began
                waiting.join(30)
                stop.set()
                thread.join(10)
                assert not waiting.is_alive(), "the login waiting for the silent server hung"
                kind, error = waited["result"]
                assert kind == "E" and error["C"] == "28000", waited
                # The bind's answer is awaited 5 s (docs/configuration.md).
                assert 4.0 < waited["seconds"] < 9.0, waited
                assert "Timed out" in pw.log(), pw.log()
                assert other_login < 2.0, other_login
                assert len(latencies) > 50, len(latencies)
                assert max(latencies) < 0.5, max(latencies)
                print(f"silent server: refused after {waited['seconds']:.1f} s; meanwhile "
                      f"{len(latencies)} queries (slowest {max(latencies) * 1000:.0f} ms), "
                      f"another LDAP login in {other_login * 1000:.0f} ms")
                # The server down: refused at once.
                slapd.stop()
                began = time.monotonic()
                assert_ldap_refused(pw, "scram_user", LDAP_PASSWORDS["scram_user"],
                                    "Can't contact LDAP server")
                assert time.monotonic() - began < 4.0
                # And back: logins work again; the client logged in before never noticed.
                slapd.start()
                assert login(pw, "scram_user", LDAP_PASSWORDS["scram_user"]) == ("ok", None)
                assert busy.execute("SELECT 2").fetchone()[0] == 2
                busy.close()
    finally:
        blackhole.close()


def test_a_client_that_hangs_up_does_not_wait_for_the_ldap_server():
    blackhole = Blackhole()
    try:
        with Slapd() as slapd:
            hba = (ldap_line(slapd, ldapport=str(blackhole.port), **SIMPLE) +
                   "host pgbouncer postgres 127.0.0.1/32 trust\n")
            with start(hba, admin_users="postgres") as pw:
                import psycopg
                console = psycopg.connect(pw.dsn(user="postgres", db="pgbouncer"),
                                          autocommit=True)

                def logging_in():
                    cursor = console.execute("SHOW CLIENTS")
                    names = [c.name for c in cursor.description]
                    state, user = names.index("state"), names.index("user")
                    return sum(1 for row in cursor.fetchall()
                               if row[user] == "scram_user" and row[state] == "login")
                client = harness.RawClient(pw.port)
                client.send_startup({"user": "scram_user", "database": "pgwarden_test"})
                client.read_message()
                data = b"whatever\0"
                client.send(b"p" + struct.pack("!I", len(data) + 4) + data)
                harness.wait_until(lambda: logging_in() == 1, what="the login waiting for LDAP")
                client.close()
                began = time.monotonic()
                harness.wait_until(lambda: logging_in() == 0, timeout=3,
                                   what="the session of the client that hung up to end")
                assert time.monotonic() - began < 2.0
                console.close()
    finally:
        blackhole.close()


def test_ldaps_and_starttls():
    import certs
    directory = tempfile.mkdtemp(prefix="pgw-ldap-certs-")
    saved = os.environ.get("LDAPTLS_CACERT")
    try:
        made = certs.Certs(directory)
        server_cert, server_key = made.server
        with Slapd(tls=(made.path("ca.crt"), server_cert, server_key)) as slapd:
            hba = (ldap_line(slapd, users="scram_user", ldapscheme="ldaps",
                             ldapport=str(slapd.tls_port), **SIMPLE) +
                   # (127.0.0.1: libldap checks "localhost" against the machine's own name)
                   ldap_line(slapd, users="md5_user", ldaptls="1",
                             ldapprefix="uid=", ldapsuffix=f",ou=other,{SUFFIX}"))
            # libldap checks the server's certificate against LDAPTLS_CACERT (or ldap.conf's
            # TLS_CACERT): the test CA for this pgwarden.
            os.environ["LDAPTLS_CACERT"] = made.path("ca.crt")
            with start(hba) as pw:
                assert login(pw, "scram_user", LDAP_PASSWORDS["scram_user"]) == ("ok", None)
                assert "TLS established" in slapd.log(), slapd.log()
                starttls = slapd.log().count(" STARTTLS")
                assert login(pw, "md5_user", LDAP_PASSWORDS["md5_user"]) == ("ok", None)
                assert slapd.log().count(" STARTTLS") == starttls + 1, slapd.log()
                assert_ldap_refused(pw, "md5_user", "wrong", "LDAP login failed")
            # A server whose certificate the CA did not sign is not talked to.
            os.environ["LDAPTLS_CACERT"] = made.path("other_ca.crt")
            with start(hba) as pw:
                binds = slapd.binds()
                assert_ldap_refused(pw, "scram_user", LDAP_PASSWORDS["scram_user"],
                                    "Can't contact LDAP server")
                assert_ldap_refused(pw, "md5_user", LDAP_PASSWORDS["md5_user"],
                                    "could not start LDAP TLS session")
                assert slapd.binds() == binds, "a password went to an unverified server"
    finally:
        if saved is None:
            os.environ.pop("LDAPTLS_CACERT", None)
        else:
            os.environ["LDAPTLS_CACERT"] = saved
        shutil.rmtree(directory, ignore_errors=True)


def test_reload():
    with Slapd() as slapd, start(ldap_line(slapd, **SIMPLE)) as pw:
        import psycopg
        kept = psycopg.connect(pw.dsn(user="scram_user", password=LDAP_PASSWORDS["scram_user"]),
                               autocommit=True)
        # The line now looks in another branch: the same login fails.
        reload(pw, ldap_line(slapd, ldapprefix="uid=", ldapsuffix=f",ou=other,{SUFFIX}"))
        assert_ldap_refused(pw, "scram_user", LDAP_PASSWORDS["scram_user"],
                            f'LDAP login failed for user "uid=scram_user,ou=other,{SUFFIX}"')
        # A line that mixes the two modes is refused whole, naming the line: the rules in force
        # stay (md5_user's entry is in ou=other).
        reload(pw, "host pgwarden_test all 127.0.0.1/32 md5\n" +
               ldap_line(slapd, ldapbasedn=SUFFIX, **SIMPLE))
        assert "reload failed" in pw.log()
        assert "hba.conf:2" in pw.log() and "together with ldapprefix" in pw.log(), pw.log()
        assert login(pw, "md5_user", LDAP_PASSWORDS["md5_user"]) == ("ok", None)
        # From ldap to md5: no LDAP server is asked any more.
        reload(pw, "host pgwarden_test all 127.0.0.1/32 md5\n")
        binds = slapd.binds()
        kind, request = login(pw, "scram_user", "x")
        assert kind == "R" and struct.unpack("!I", request[:4])[0] == 5, (kind, request)
        out = harness.psql(pw.dsn(user="md5_user"), "SELECT current_user")
        assert out.stdout.strip() == "md5_user", out
        assert slapd.binds() == binds
        # The connection made before goes on.
        assert kept.execute("SELECT 7").fetchone()[0] == 7
        kept.close()


if __name__ == "__main__":
    harness.main(globals())
