"""The pgbench scenarios (rows of the report) and one measured pgbench run (a cell sample)."""
import glob
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import contestants as C


@dataclass
class Scenario:
    key: str            # short id, for --only and the CSV
    title: str          # row label in the report
    clients: int
    args: tuple = ()    # extra pgbench arguments
    tpcb: bool = False  # default (TPC-B-like) script: tables are prepared before each run
    # PgBouncer's arguments when they differ: Debian 12's PgBouncer 1.18 has no prepared
    # statement support in transaction pooling, so its -M prepared row runs -M extended.
    pgbouncer_args: tuple = None
    # libpq's sslmode for pgbench: "require" rows measure TLS between pgbench and the pooler
    # (both poolers have the same certificate; toward PostgreSQL they stay in clear).
    sslmode: str = "disable"
    # pgbench threads (-j); 0: min(2, clients).
    jobs: int = 0

    def args_for(self, contestant_name):
        if contestant_name == "pgbouncer" and self.pgbouncer_args is not None:
            return self.pgbouncer_args
        return self.args

    def threads(self):
        return self.jobs or max(1, min(2, self.clients))


SCENARIOS = [
    Scenario("S-c1", "-S simple, 1 client", 1, ("-S",)),
    Scenario("S-c10", "-S simple, 10 clients", 10, ("-S",)),
    Scenario("S-c100", "-S simple, 100 clients", 100, ("-S",)),
    Scenario("S-c1000", "-S simple, 1000 clients", 1000, ("-S",)),
    Scenario("S-ext-c100", "-S -M extended, 100 clients", 100, ("-S", "-M", "extended")),
    Scenario("S-prep-c10", "-S -M prepared, 10 clients (PgBouncer: -M extended)", 10,
             ("-S", "-M", "prepared"), pgbouncer_args=("-S", "-M", "extended")),
    Scenario("S-prep-c100", "-S -M prepared, 100 clients (PgBouncer: -M extended)", 100,
             ("-S", "-M", "prepared"), pgbouncer_args=("-S", "-M", "extended")),
    # A SET in every transaction (bench/session_set.sql): the session-state guard keeps it per
    # client (session_state = track, the default); PgBouncer passes it through.
    Scenario("S-set-c100", "-S with a SET per transaction, 100 clients", 100,
             ("-f", os.path.join(os.path.dirname(os.path.abspath(__file__)), "session_set.sql"))),
    Scenario("S-C-c10", "-S -C (connect per tx), 10 clients", 10, ("-S", "-C")),
    # The same at a fixed rate both poolers sustain (pgbench -R; latency includes the schedule
    # lag): the tail at equal load, where S-C-c10 runs each as fast as it goes and the faster
    # one leaves pgbench's own SCRAM work less CPU.
    Scenario("S-C-R150-c10", "-S -C at 150 tx/s (fixed rate), 10 clients", 10,
             ("-S", "-C", "-R", "150")),
    # The same with one pgbench thread per client. pgbench connects synchronously under -C:
    # with two threads a client's login blocks the other clients of its thread, and when the
    # pooler answers a query before pgbench looks for the reply, pgbench goes on with that
    # same client (a new connection, a new query) while its siblings wait with their results
    # unread: the faster the pooler, the longer those runs and the p99 of S-C-c10 (docs/
    # benchmarks.md, "The -S -C p99"). Here each client's latency is its own.
    Scenario("S-C-j10-c10", "-S -C (connect per tx), 10 clients, one pgbench thread each", 10,
             ("-S", "-C"), jobs=10),
    Scenario("tpcb-c50", "TPC-B, 50 clients", 50, (), tpcb=True),
    # TLS from pgbench to the pooler (sslmode=require); -C: a TLS handshake and a SCRAM
    # exchange per transaction.
    Scenario("S-tls-c100", "-S over TLS, 100 clients", 100, ("-S",), sslmode="require"),
    Scenario("S-tls-c1000", "-S over TLS, 1000 clients", 1000, ("-S",), sslmode="require"),
    Scenario("S-C-tls-c10", "-S -C over TLS + SCRAM (login per tx), 10 clients", 10,
             ("-S", "-C"), sslmode="require"),
    Scenario("S-C-tls-j10-c10",
             "-S -C over TLS + SCRAM (login per tx), 10 clients, one pgbench thread each", 10,
             ("-S", "-C"), sslmode="require", jobs=10),
]

SMOKE_SCENARIOS = [
    Scenario("S-c10", "-S simple, 10 clients", 10, ("-S",)),
    Scenario("S-C-c10", "-S -C (connect per tx), 10 clients", 10, ("-S", "-C")),
    Scenario("tpcb-c10", "TPC-B, 10 clients", 10, (), tpcb=True),
]


def select_scenarios(only, smoke):
    pool = SMOKE_SCENARIOS if smoke else SCENARIOS
    if not only:
        return list(pool)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    everything = {s.key: s for s in SCENARIOS + SMOKE_SCENARIOS}
    chosen = []
    for w in wanted:
        if w in everything:
            matches = [everything[w]]
        else:
            matches = [s for s in everything.values() if w.lower() in s.key.lower()]
        if not matches:
            raise SystemExit(f"--only: no scenario matches {w!r}; known: "
                             f"{', '.join(everything)}")
        for s in matches:
            if s not in chosen:
                chosen.append(s)
    order = SCENARIOS + SMOKE_SCENARIOS
    return sorted(chosen, key=lambda s: order.index(s))


@dataclass
class RunResult:
    scenario: str
    contestant: str
    rep: int
    ok: bool = False
    error: str = ""
    tps: float = None
    processed: int = 0
    failed: int = 0
    lat_avg_ms: float = None
    lat_p99_ms: float = None
    conn_avg_ms: float = None  # -C only: pgbench's "average connection time"
    cpu_us_per_tx: float = None
    sys_us_per_tx: float = None  # the kernel's part of cpu_us_per_tx (stime)
    preempted_per_tx: float = None  # the pooler's involuntary context switches per transaction
    peak_rss_kb: int = None
    end_rss_kb: int = None
    wall_s: float = None
    extra: dict = field(default_factory=dict)


def pgbench_env(sslmode="disable"):
    env = dict(os.environ)
    env.update(PGPASSWORD=C.PASSWORD, PGSSLMODE=sslmode, PGGSSENCMODE="disable",
               PGCONNECT_TIMEOUT="30", PGAPPNAME="pgbench")
    return env


def parse_log(prefix):
    """From pgbench's per-transaction log files: latencies (µs) of the successful transactions,
    the completion times (epoch seconds) of all logged transactions, and the number of
    failed/skipped ones."""
    latencies = []
    ends = []
    failed = 0
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6:
                    continue
                ends.append(int(parts[4]) + int(parts[5]) / 1e6)
                if parts[2].isdigit():
                    latencies.append(int(parts[2]))
                else:  # "failed" or "skipped"
                    failed += 1
    return latencies, ends, failed


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


class CpuSampler:
    """Samples a process's CPU ticks (user + system, and system alone) and its involuntary
    context switches with wall-clock timestamps every `interval` seconds, so what it spent
    inside a time window (e.g. between the first and the last transaction of a run, leaving out
    pgbench's initial connections and its teardown) can be interpolated."""
    TOTAL, SYSTEM, PREEMPTED = 0, 1, 2

    def __init__(self, pid, interval=0.1):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def sample(self):
        try:
            user, system = C.cpu_ticks_split(self.pid)
            preempted = C.involuntary_switches(self.pid)
            self.samples.append((time.time(), (user + system, system, preempted)))
        except OSError:
            pass

    def loop(self):
        while not self.stop_event.is_set():
            self.sample()
            self.stop_event.wait(self.interval)

    def __enter__(self):
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(5)
        self.sample()

    def value_at(self, t, k=TOTAL):
        """Ticks (TOTAL: user + system, or SYSTEM alone) or context switches (PREEMPTED) at
        time `t`, interpolated."""
        s = [(ts, v[k]) for ts, v in self.samples]
        if not s:
            return None
        if t <= s[0][0]:
            return s[0][1]
        for (t0, v0), (t1, v1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return v0 + (v1 - v0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0)
        return s[-1][1]


def run_pgbench(scenario, contestant, duration, rep, workdir, connect_allowance_ms=30,
                timeout_extra=240):
    """One pgbench run against a contestant, with pooler CPU and RSS around it.

    pgbench's -T clock starts before its clients connect, and 1000 SCRAM logins take seconds,
    so -T is `duration` plus `connect_allowance_ms` per client (not with -C, which connects
    per transaction anyway)."""
    res = RunResult(scenario.key, contestant.name, rep)
    connects = "-C" not in scenario.args
    allowance = math.ceil(scenario.clients * connect_allowance_ms / 1000.0) if connects else 0
    res.extra["T"] = duration + allowance
    logdir = tempfile.mkdtemp(prefix=f"{scenario.key}-{contestant.name}-{rep}-", dir=workdir)
    prefix = os.path.join(logdir, "tx")
    cmd = ["pgbench", "-n", "-T", str(duration + allowance), "-c", str(scenario.clients),
           "-j", str(scenario.threads()), *scenario.args_for(contestant.name), "-l",
           f"--log-prefix={prefix}",
           "-h", contestant.host, "-p", str(contestant.port), "-U", C.USER, C.DATABASE]
    if scenario.tpcb:
        contestant.pg.prepare_tpcb()
    sampler = None
    if contestant.pooler:
        if not contestant.alive():
            res.error = f"{contestant.label} is not running before the run"
            return res
        contestant.reset_peak()
        sampler = CpuSampler(contestant.pid).__enter__()
    started = time.monotonic()
    out_path = os.path.join(logdir, "pgbench.out")
    try:
        with open(out_path, "w+") as out:
            proc = C.popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=pgbench_env(scenario.sslmode),
                           cwd=logdir)
            try:
                code = proc.wait(duration + allowance + timeout_extra)
            except subprocess.TimeoutExpired:
                C.stop_proc(proc, timeout=5)
                code = "timeout"
            finally:
                C.forget(proc)
            out.seek(0)
            output = out.read()
    finally:
        if sampler:
            sampler.__exit__()
    res.wall_s = time.monotonic() - started
    if contestant.pooler:
        if not contestant.alive():
            res.error = f"{contestant.label} died during the run: {contestant.log_tail(10)}"
            shutil.rmtree(logdir, ignore_errors=True)
            return res
        res.peak_rss_kb = contestant.peak_rss_kb()
        res.end_rss_kb = contestant.rss_kb()

    m = re.search(r"number of transactions actually processed: (\d+)", output)
    res.processed = int(m.group(1)) if m else 0
    m = re.search(r"number of failed transactions: (\d+)", output)
    res.failed = int(m.group(1)) if m else 0
    m = re.search(r"^tps = ([\d.]+)", output, re.M)
    res.tps = float(m.group(1)) if m else None
    m = re.search(r"^average connection time = ([\d.]+) ms", output, re.M)
    res.conn_avg_ms = float(m.group(1)) if m else None
    m = re.search(r"initial connection time = ([\d.]+) ms", output)
    if m:
        res.extra["connect_s"] = float(m.group(1)) / 1000.0
    latencies, ends, log_failed = parse_log(prefix)
    res.failed = max(res.failed, log_failed)
    if latencies:
        latencies.sort()
        res.lat_avg_ms = sum(latencies) / len(latencies) / 1000.0
        res.lat_p99_ms = percentile(latencies, 99) / 1000.0
    if sampler and len(ends) > 1:
        # CPU between the first and the last completed transaction, per transaction completed
        # in that window.
        first, last = min(ends), max(ends)
        transactions = len(ends) - 1

        def per_tx(k):
            return (sampler.value_at(last, k) - sampler.value_at(first, k)) / transactions

        res.cpu_us_per_tx = per_tx(CpuSampler.TOTAL) * 1e6 / C.CLK_TCK
        res.sys_us_per_tx = per_tx(CpuSampler.SYSTEM) * 1e6 / C.CLK_TCK
        res.preempted_per_tx = per_tx(CpuSampler.PREEMPTED)
        res.extra["window_s"] = last - first
    aborted = re.findall(r"^pgbench: error: .*$", output, re.M)
    problems = []
    if code != 0:
        problems.append(f"pgbench exit status {code}")
    if res.failed:
        problems.append(f"{res.failed} failed transactions")
    if not res.processed or res.tps is None:
        problems.append("no transactions processed"
                        + (f" (-T {duration + allowance} s was used up by the initial "
                           f"connections? raise --connect-allowance-ms)"
                           if connects and code == 0 else ""))
    if aborted:
        problems.append(f"{len(aborted)} pgbench errors, first: {aborted[0][:300]}")
    if problems:
        res.error = "; ".join(problems)
    res.ok = not problems
    if not res.ok:
        res.extra["output_tail"] = "\n".join(output.splitlines()[-15:])
    shutil.rmtree(logdir, ignore_errors=True)
    return res
