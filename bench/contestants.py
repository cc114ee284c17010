"""The throwaway PostgreSQL and the three contestants: pgwarden, PgBouncer, direct.

Every process started here is registered in `PROCS` (or is the PostgreSQL cluster, stopped by
`BenchPostgres.cleanup`), and `stop_all()` ends whatever is still running. Children run in
their own session so a terminal's Ctrl-C reaches only this script, which then cleans up.
"""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import harness  # noqa: E402  (run, as_postgres, free_port, wait_until, raise_nofile, Postgres)

PG_BIN = harness.PG_BIN
PGBOUNCER_BIN = "/usr/sbin/pgbouncer"
USER = "bench_user"
PASSWORD = "bench_pw"
DATABASE = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROCS = []  # Popen objects of everything we started (poolers, pgbench)


def stop_proc(proc, sig=signal.SIGTERM, timeout=15):
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
    except ProcessLookupError:
        return proc.wait()


def stop_all():
    for proc in list(PROCS):
        stop_proc(proc)
        PROCS.remove(proc)


def popen(cmd, **kwargs):
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    PROCS.append(proc)
    return proc


def forget(proc):
    if proc in PROCS:
        PROCS.remove(proc)


# ---- /proc -----------------------------------------------------------------------------------

def cpu_ticks_split(pid):
    """(utime, stime) of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)


def involuntary_switches(pid):
    """Involuntary context switches of the whole process (all threads): how often the
    scheduler took the CPU away from it while it could still run. Raises OSError if the process
    is gone."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("nonvoluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            pass  # the thread ended
    return total


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    return sum(cpu_ticks_split(pid))


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs). True on success."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def nofile_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3]), int(line.split()[4])
    return None


def wait_port(port, proc, what, timeout=15):
    def ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    harness.wait_until(ready, timeout, what=f"{what} to listen on {port}")


# ---- PostgreSQL ------------------------------------------------------------------------------

class BenchPostgres(harness.Postgres):
    """A PostgreSQL 15 cluster under `root` with the pgbench tables at `scale`, owned by
    bench_user (SCRAM over TCP), so pgbench needs no extra grants and may vacuum."""

    def __init__(self, root, scale=10, max_connections=1100, shared_buffers="256MB"):
        self.dir = os.path.join(root, "pg")
        os.mkdir(self.dir)
        self.data = os.path.join(self.dir, "data")
        self.port = harness.free_port()
        self.host = "127.0.0.1"
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.scale = scale
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers

    def start_fresh(self):
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        os.chmod(self.dir, 0o755)
        harness.run(harness.as_postgres(
            [f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--nosync",
             "-E", "UTF8", "--locale=C"]), timeout=120)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write(f"""
port = {self.port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.dir}'
max_connections = {self.max_connections}
shared_buffers = {self.shared_buffers}
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
password_encryption = 'scram-sha-256'
log_min_messages = warning
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as hba:
            hba.write("local all all trust\n"
                      "host all postgres 127.0.0.1/32 trust\n"
                      "host all all 127.0.0.1/32 scram-sha-256\n")
        self.start()
        self.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        self.sql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        harness.run(["pgbench", "-i", "-s", str(self.scale), "-q",
                     f"host={self.dir} port={self.port} dbname={DATABASE} user={USER}"],
                    timeout=900)
        self.sql("VACUUM ANALYZE", db=DATABASE, user=USER)

    def enable_tls(self, cert, key):
        """ssl = on with this certificate (for the direct rows of the TLS scenarios)."""
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            target = os.path.join(self.data, name)
            shutil.copy(source, target)
            if os.geteuid() == 0:
                shutil.chown(target, "postgres")
            os.chmod(target, 0o600)
        self.sql("ALTER SYSTEM SET ssl = on")
        self.sql("SELECT pg_reload_conf()")

    def scram_verifier(self):
        """The bench user's SCRAM-SHA-256 verifier as PostgreSQL stores it."""
        rows = self.sql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{USER}'")
        return rows[0][0]

    def start(self):
        # Own session: a Ctrl-C in the terminal must not stop it behind our back.
        subprocess.run(harness.as_postgres(
            [f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "start"]),
            check=True, timeout=90, capture_output=True, start_new_session=True)

    def prepare_tpcb(self):
        """What pgbench does before a TPC-B run without -n, done directly (not through the
        contestant) so it costs no contestant CPU: clean the small tables, empty history."""
        for statement in ("VACUUM pgbench_branches", "VACUUM pgbench_tellers",
                          "TRUNCATE pgbench_history"):
            self.sql(statement, db=DATABASE, user=USER)

    def version(self):
        return harness.run([f"{PG_BIN}/postgres", "--version"]).stdout.strip()


# ---- contestants -----------------------------------------------------------------------------

class Contestant:
    name = "?"
    label = "?"
    pooler = False

    def __init__(self, pg, root):
        self.pg = pg
        self.root = root
        self.host = "127.0.0.1"
        self.port = None
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        pass

    def stop(self):
        pass

    def restart(self):
        self.stop()
        self.start()

    def alive(self):
        return True

    def cpu_ticks(self):
        return cpu_ticks(self.pid) if self.pooler else None

    def rss_kb(self):
        return status_kb(self.pid, "VmRSS") if self.pooler else None

    def peak_rss_kb(self):
        return status_kb(self.pid, "VmHWM") if self.pooler else None

    def reset_peak(self):
        return reset_peak_rss(self.pid) if self.pooler else False


class Direct(Contestant):
    name = "direct"
    label = "direct"

    def __init__(self, pg, root):
        super().__init__(pg, root)
        self.port = pg.port


class Pooler(Contestant):
    """A PgBouncer-compatible pooler with a pgbouncer.ini; both poolers get the same settings
    (`common_settings`), only their own paths differ."""
    pooler = True
    binary = None
    run_as = None  # OS user, or None for ourselves

    def __init__(self, pg, root, settings):
        super().__init__(pg, root)
        self.dir = os.path.join(root, self.name)
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)
        if self.run_as and os.geteuid() == 0:
            shutil.chown(self.dir, self.run_as)
        self.ini = os.path.join(self.dir, f"{self.name}.ini")
        self.logfile = os.path.join(self.dir, f"{self.name}.log")
        self.settings = dict(settings)
        self.secret = None  # userlist.txt entry instead of the plaintext password (--userlist)
        self.starts = 0

    def write_config(self):
        userlist = os.path.join(self.dir, "userlist.txt")
        with open(userlist, "w") as f:
            f.write(f'"{USER}" "{self.secret or PASSWORD}"\n')
        settings = dict(self.settings)
        settings.update({
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": self.dir,
            "auth_file": userlist,
            "logfile": self.logfile,
            "pidfile": os.path.join(self.dir, f"{self.name}.pid"),
        })
        lines = ["[databases]",
                 f"{DATABASE} = host=127.0.0.1 port={self.pg.port} dbname={DATABASE}",
                 "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        with open(self.ini, "w") as f:
            f.write("\n".join(lines) + "\n")
        for path in (self.ini, userlist):
            os.chmod(path, 0o644)
            if self.run_as and os.geteuid() == 0:
                shutil.chown(path, self.run_as)

    def command(self):
        return [self.binary, self.ini]

    def start(self):
        self.port = harness.free_port()
        self.write_config()
        self.stdout = open(os.path.join(self.dir, "stdout.log"), "a")
        kwargs = {}
        if self.run_as and os.geteuid() == 0:
            # Same as `runuser -u postgres --`, minus the intermediate process (so proc.pid is
            # the pooler's) and minus PAM (which could reset the open-files limit we raised).
            pw = pwd.getpwnam(self.run_as)
            kwargs = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        self.proc = popen(self.command(), stdout=self.stdout, stderr=subprocess.STDOUT,
                          cwd=self.dir, **kwargs)
        self.starts += 1
        try:
            wait_port(self.port, self.proc, self.label)
        except Exception as e:
            raise RuntimeError(f"{e}\n{self.log_tail()}") from None

    def stop(self):
        if self.proc is not None:
            stop_proc(self.proc)
            forget(self.proc)
            self.proc = None
            self.stdout.close()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=30):
        text = ""
        for path in (self.logfile, os.path.join(self.dir, "stdout.log")):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return "\n".join(text.splitlines()[-lines:])


class Pgwarden(Pooler):
    name = "pgwarden"
    label = "pgwarden"

    def __init__(self, pg, root, settings, binary):
        super().__init__(pg, root, settings)
        self.binary = binary

    def version(self):
        out = harness.run([self.binary, "-V"], check=False)
        return (out.stdout + out.stderr).strip().splitlines()[0] if (out.stdout + out.stderr) \
            else "?"


class PgBouncer(Pooler):
    name = "pgbouncer"
    label = "PgBouncer"
    run_as = "postgres"  # PgBouncer refuses to run as root

    def __init__(self, pg, root, settings, binary=PGBOUNCER_BIN):
        super().__init__(pg, root, settings)
        self.binary = binary

    def version(self):
        return harness.run([self.binary, "--version"]).stdout.splitlines()[0].strip()


def ensure_pgwarden(binary, build_dir):
    """Builds build/pgwarden (Release) if it is missing."""
    if os.path.exists(binary):
        return
    print(f"{binary} missing: building it (Release)", flush=True)
    subprocess.run(["cmake", "-S", REPO, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release"],
                   check=True)
    subprocess.run(["cmake", "--build", build_dir, "-j2", "--target", "pgwarden"], check=True)
