#!/usr/bin/python3
"""Integration-test harness: a throwaway PostgreSQL 15 and pgwarden on free ports.

No pytest (Debian's python3 in CI may not have it): each test file defines test_* functions
and calls harness.main(globals()), which runs them in order, prints PASS/FAIL with timings and
ends with the line "N passed, N failed" (exit status 1 on any failure).

PostgreSQL refuses to run as root, so when we are root its processes run as the `postgres`
OS user (runuser), in a temp dir that user owns.
"""
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

PG_BIN = "/usr/lib/postgresql/15/bin"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGWARDEN_BIN = os.environ.get("PGWARDEN_BIN", os.path.join(REPO, "build", "pgwarden"))
KEEP = os.environ.get("PGWARDEN_KEEP") == "1"

USERS = {  # name -> password; how PostgreSQL stores it is set up in Postgres.start()
    "scram_user": "scram_pw",
    "md5_user": "md5_pw",
    "app_user": "app_pw",
    "trust_user": "",
    "password_user": "password_pw",  # PostgreSQL asks for it in cleartext (pg_hba "password")
}


def raise_nofile(limit=20000):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(limit, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port():
    """A port nobody listens on, chosen at random to avoid clashes between parallel runs."""
    for _ in range(100):
        port = random.randint(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(cmd, env=None, timeout=60, input=None, check=True):
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    result = subprocess.run(cmd, env=full_env, timeout=timeout, input=input,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"command failed ({result.returncode}): {cmd}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


def psql(dsn, sql, timeout=30, check=True):
    """Runs sql through the psql binary; returns stdout (unaligned, tuples only)."""
    return run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql],
               timeout=timeout, check=check)


class Postgres:
    """A PostgreSQL 15 cluster in a temp dir, with scram, md5 and trust users."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pgw-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.logfile = os.path.join(self.dir, "postgres.log")

    def __enter__(self):
        try:
            self.start_fresh()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def start_fresh(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        os.chmod(self.dir, 0o755)
        run(as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                         "--nosync", "-E", "UTF8", "--locale=C"]), timeout=120)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"""
port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 600
password_encryption = 'scram-sha-256'
log_min_messages = warning
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:
            hba.write("""local all all trust
host all postgres 127.0.0.1/32 trust
host all trust_user 127.0.0.1/32 trust
host all md5_user 127.0.0.1/32 md5
host all password_user 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
""")
        self.start()
        self.sql("CREATE ROLE scram_user LOGIN PASSWORD 'scram_pw'")
        self.sql("CREATE ROLE app_user LOGIN PASSWORD 'app_pw'")
        self.sql("CREATE ROLE trust_user LOGIN")
        self.sql("CREATE ROLE password_user LOGIN PASSWORD 'password_pw'")
        self.sql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5_pw'")
        self.sql("CREATE DATABASE pgwarden_test")
        self.sql("GRANT ALL ON SCHEMA public TO PUBLIC", db="pgwarden_test")

    def start(self):
        run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60",
                         "start"]), timeout=90)

    def stop(self, mode="fast"):
        run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60",
                         "stop"]), timeout=90, check=False)

    def restart(self):
        self.stop()
        self.start()

    def dsn(self, db="pgwarden_test", user="postgres"):
        return f"host={self.dir} port={self.port} dbname={db} user={user}"

    def sql(self, query, db="postgres", user="postgres"):
        out = psql(self.dsn(db, user), query).stdout
        return [line.split("|") for line in out.splitlines() if line]

    def backend_count(self, user=None, db="pgwarden_test"):
        cond = f"datname = '{db}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        if user:
            cond += f" AND usename = '{user}'"
        return int(self.sql(f"SELECT count(*) FROM pg_stat_activity WHERE {cond}")[0][0])

    def log(self):
        try:
            with open(self.logfile) as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self.stop("immediate")
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)


class Pgwarden:
    """pgwarden in front of a Postgres, configured like pgbouncer.ini."""

    def __init__(self, pg, databases=None, users=None, userlist=None, **settings):
        self.pg = pg
        self.dir = tempfile.mkdtemp(prefix="pgw-")
        self.port = free_port()
        self.host = "127.0.0.1"
        self.logfile = os.path.join(self.dir, "pgwarden.log")
        self.ini = os.path.join(self.dir, "pgwarden.ini")
        self.databases = databases or {
            "pgwarden_test": f"host=127.0.0.1 port={pg.port} dbname=pgwarden_test"}
        self.users = users or {}
        self.userlist = userlist if userlist is not None else dict(USERS, postgres="")
        self.settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": self.dir,
            "auth_type": "scram-sha-256",
            "auth_file": os.path.join(self.dir, "userlist.txt"),
            "pool_mode": "transaction",
            "default_pool_size": "10",
            "max_client_conn": "2000",
            "logfile": self.logfile,
            "pidfile": os.path.join(self.dir, "pgwarden.pid"),
        }
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.proc = None
        self.extra_args = []

    def write_config(self):
        with open(os.path.join(self.dir, "userlist.txt"), "w") as f:
            for user, secret in self.userlist.items():
                f.write('"%s" "%s"\n' % (user.replace('"', '""'), secret.replace('"', '""')))
        lines = ["[databases]"]
        lines += [f"{name} = {conn}" for name, conn in self.databases.items()]
        if self.users:
            lines.append("[users]")
            lines += [f"{name} = {conf}" for name, conf in self.users.items()]
        lines.append("[pgbouncer]")
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        with open(self.ini, "w") as f:
            f.write("\n".join(lines) + "\n")

    def __enter__(self):
        self.start()
        return self

    def start(self, *args):
        raise_nofile()
        self.write_config()
        self.stdout = open(os.path.join(self.dir, "stdout.log"), "w")
        self.proc = subprocess.Popen([PGWARDEN_BIN, *args, self.ini], stdout=self.stdout,
                                     stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"pgwarden exited with {self.proc.returncode}:\n{self.output()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(ready, 10, what="pgwarden to listen")
        return self

    def __exit__(self, exc_type, *rest):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # A sanitized build (scripts/test) reports leaks, memory errors and undefined
        # behaviour on its stderr, at exit for leaks: any report fails the test that ran it.
        report = sanitizer_report(self.output())
        if exc_type is not None:
            print("---- pgwarden log (last 60 lines) ----")
            print("\n".join(self.log().splitlines()[-60:]))
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        if report and exc_type is None:
            raise AssertionError(f"pgwarden's sanitizers reported:\n{report}")

    @property
    def pid(self):
        return self.proc.pid

    def dsn(self, user="scram_user", password=None, db="pgwarden_test", **params):
        if password is None:
            password = USERS.get(user, "")
        parts = [f"host=127.0.0.1", f"port={self.port}", f"dbname={db}", f"user={user}"]
        if password:
            parts.append(f"password={password}")
        parts.append("connect_timeout=10")
        parts += [f"{k}={v}" for k, v in params.items()]
        return " ".join(parts)

    def url(self, user="scram_user", password=None, db="pgwarden_test", scheme="postgresql"):
        if password is None:
            password = USERS.get(user, "")
        auth = f"{user}:{password}@" if password else f"{user}@"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def rewrite_config(self, **settings):
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.write_config()

    def stop(self, sig=signal.SIGTERM, timeout=10):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def log(self):
        text = ""
        for name in (self.logfile,):
            try:
                with open(name) as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def output(self):
        try:
            with open(os.path.join(self.dir, "stdout.log")) as f:
                return f.read()
        except OSError:
            return ""


# What the sanitizers print, and the debug build's own checks (src/util/ranked_mutex.cpp,
# src/net/reactor.cpp).
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "pgwarden: lock order violated", "pgwarden: thread ownership violated")


def sanitizer_report(output):
    """The first sanitizer report in pgwarden's output (up to 80 lines), or ""."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if any(marker in line for marker in SANITIZER_MARKERS):
            return "\n".join(lines[i:i + 80])
    return ""


class RawClient:
    """A minimal protocol v3 client over a socket, to assert exact bytes and SQLSTATEs."""

    def __init__(self, port, host="127.0.0.1", timeout=10, sock=None):
        """Connects to host:port, or speaks over `sock`, a socket already connected."""
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def send_startup(self, params, version=196608):
        body = struct.pack("!I", version)
        for k, v in params.items():
            body += k.encode() + b"\0" + v.encode() + b"\0"
        body += b"\0"
        self.send(struct.pack("!I", len(body) + 4) + body)

    def read_message(self):
        """(type, body) or None at EOF."""
        while len(self.buf) < 5:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        mtype = self.buf[0:1]
        length = struct.unpack("!I", self.buf[1:5])[0]
        while len(self.buf) < 1 + length:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        body = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return mtype, body

    def read_until(self, types=(b"Z",), limit=1000):
        messages = []
        for _ in range(limit):
            message = self.read_message()
            if message is None:
                break
            messages.append(message)
            if message[0] in types:
                break
        return messages

    def send_query(self, sql):
        """Sends a simple Query without waiting for its answer."""
        body = sql.encode() + b"\0"
        self.send(b"Q" + struct.pack("!I", len(body) + 4) + body)

    def query(self, sql):
        self.send_query(sql)
        return self.read_until()

    def close(self):
        self.sock.close()


def cancel_sleep(conn, after, within):
    """Runs pg_sleep(30) on a psycopg 3 connection and cancels it from another thread `after`
    seconds in: the query must fail with 57014 within `within` seconds of starting."""
    import threading
    import psycopg
    timer = threading.Timer(after, conn.cancel)
    timer.start()
    start = time.monotonic()
    try:
        conn.execute("SELECT pg_sleep(30)")
        raise AssertionError("pg_sleep was not cancelled")
    except psycopg.errors.QueryCanceled as e:
        assert e.sqlstate == "57014"
    finally:
        timer.cancel()
    elapsed = time.monotonic() - start
    assert elapsed < within, f"cancel took {elapsed:.2f}s"
    return elapsed


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def first_error(messages):
    for mtype, body in messages:
        if mtype == b"E":
            return error_fields(body)
    return None


def max_backends_during(pg, fn, user=None, interval=0.05):
    """Runs fn() while sampling PostgreSQL's backend count; returns (fn result, max count)."""
    import threading
    samples = []
    stop = threading.Event()

    def sampler():
        # One persistent connection: spawning psql per sample is too slow on a loaded machine.
        import psycopg
        cond = ("datname = 'pgwarden_test' AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'")
        if user:
            cond += " AND usename = %s"
        with psycopg.connect(pg.dsn(db="postgres"), autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {cond}",
                                   (user,) if user else ()).fetchone()
                samples.append(int(row[0]))
                stop.wait(interval)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        stop.set()
        thread.join(10)
    return result, max(samples or [0]), len(samples)


def main(namespace):
    raise_nofile()
    tests = [(name, fn) for name, fn in namespace.items()
             if name.startswith("test_") and callable(fn)]
    only = os.environ.get("PGWARDEN_ONLY")
    if only:
        tests = [(n, f) for n, f in tests if only in n]
    passed = failed = 0
    for name, fn in tests:
        start = time.monotonic()
        try:
            fn()
            passed += 1
            print(f"PASS {name} ({time.monotonic() - start:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - start:.1f}s)", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
