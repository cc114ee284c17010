"""Aggregation (median, min, max per cell), ratios, the machine description, and the markdown
and CSV output."""
import csv
import io
import os
import platform
import statistics
import subprocess

import contestants as C

CONTESTANTS = ["pgwarden", "pgbouncer", "direct"]
LABELS = {"pgwarden": "pgwarden", "pgbouncer": "PgBouncer", "direct": "direct"}

# metric key, label, unit, higher is better, scale from stored value, decimals
RUN_METRICS = [
    ("tps", "TPS", "tx/s", True, 1, 0),
    ("lat_avg_ms", "Average latency", "ms", False, 1, 3),
    ("lat_p99_ms", "p99 latency", "ms", False, 1, 3),
    # -C rows only: pgbench's own average of its connection set-ups (TCP, TLS, SCRAM, up to
    # ReadyForQuery), which its per-transaction latencies leave out.
    ("conn_avg_ms", "Average connection time, -C rows (pgbench's figure)", "ms", False, 1, 3),
    ("cpu_us_per_tx", "Pooler CPU per transaction", "µs", False, 1, 1),
    ("sys_us_per_tx", "Pooler CPU per transaction spent in the kernel (stime)", "µs", False, 1, 1),
    ("preempted_per_tx", "Pooler involuntary context switches", "per transaction", False, 1, 3),
    ("peak_rss_kb", "Pooler peak RSS during the run (VmHWM)", "MiB", False, 1 / 1024, 2),
    ("end_rss_kb", "Pooler RSS at the end of the run (VmRSS)", "MiB", False, 1 / 1024, 2),
]

# Figures of the pooler process: the direct contestant has none.
POOLER_ONLY = ("cpu_us_per_tx", "sys_us_per_tx", "preempted_per_tx", "peak_rss_kb", "end_rss_kb")

CAPACITY_METRICS = [
    ("kb_per_client", "RSS growth per idle client", "KiB", False, 1, 2),
    ("rss_before_kb", "RSS before the idle clients", "MiB", False, 1 / 1024, 2),
    ("rss_after_kb", "RSS with the idle clients", "MiB", False, 1 / 1024, 2),
    ("login_rate", "Sequential SCRAM logins per second", "logins/s", True, 1, 0),
    ("cpu_us_per_login", "Pooler CPU per login", "µs", False, 1, 1),
    ("storm_rss_before_kb", "RSS before the login storm", "MiB", False, 1 / 1024, 2),
    ("storm_peak_rss_kb", "Peak RSS during the login storm (VmHWM)", "MiB", False, 1 / 1024, 2),
    ("storm_rss_after_kb", "RSS after the login storm, its clients still connected", "MiB",
     False, 1 / 1024, 2),
    ("storm_kb_per_client", "RSS growth per client left after the login storm", "KiB", False, 1,
     2),
]

# Where each capacity metric is kept: (part of a repetition, key in it).
CAPACITY_SOURCES = {
    "login_rate": ("login", "rate"),
    "cpu_us_per_login": ("login", "cpu_us_per_login"),
    "storm_rss_before_kb": ("storm", "rss_before_kb"),
    "storm_peak_rss_kb": ("storm", "peak_rss_kb"),
    "storm_rss_after_kb": ("storm", "rss_after_kb"),
    "storm_kb_per_client": ("storm", "kb_per_client"),
}
CAPACITY_PARTS = ("idle", "login", "storm")
# Absolute sizes: shown next to each other, never flagged as worse.
CAPACITY_UNFLAGGED = ("rss_before_kb", "rss_after_kb", "storm_rss_before_kb", "storm_rss_after_kb")


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def machine_info(pg, pgwarden, pgbouncer, pgwarden_src):
    cpu_model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    distro = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    commit = sh(["git", "-C", C.REPO, "rev-parse", "--short=12", "HEAD"]) or "?"
    if sh(["git", "-C", C.REPO, "status", "--porcelain", "--untracked-files=no"]):
        commit += " (working tree has uncommitted changes)"
    build_type = "?"
    cache = os.path.join(os.path.dirname(os.path.dirname(pgwarden_src)), "CMakeCache.txt")
    if not os.path.exists(cache):
        cache = os.path.join(os.path.dirname(pgwarden_src), "CMakeCache.txt")
    try:
        with open(cache) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    build_type = line.split("=", 1)[1].strip() or "(none)"
    except OSError:
        pass
    return {
        "cpu": f"{os.cpu_count()} cores, {cpu_model}",
        "memory": mem,
        "os": distro,
        "kernel": platform.release(),
        "postgresql": pg.version(),
        "pgbouncer": pgbouncer.version(),
        "pgwarden": f"{pgwarden.version()}, git {commit}, {pgwarden_src} ({build_type} build)",
        "pgbench": sh(["pgbench", "--version"]),
    }


def load_average():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


class Cell:
    def __init__(self, values):
        self.values = [v for v in values if v is not None]

    @property
    def n(self):
        return len(self.values)

    def median(self):
        return statistics.median(self.values) if self.values else None

    def min(self):
        return min(self.values) if self.values else None

    def max(self):
        return max(self.values) if self.values else None


def fmt(value, scale, decimals):
    if value is None:
        return "n/a"
    return f"{value * scale:,.{decimals}f}"


def fmt_cell(cell, scale, decimals):
    if cell is None or not cell.n:
        return "n/a"
    text = fmt(cell.median(), scale, decimals)
    if cell.n > 1:
        text += f" ({fmt(cell.min(), scale, decimals)}–{fmt(cell.max(), scale, decimals)})"
    return text


def ratio(a, b):
    if a is None or b is None or a.median() is None or b.median() is None or b.median() == 0:
        return None
    return a.median() / b.median()


def is_worse(r, higher_better, tolerance=0.05):
    if r is None:
        return False
    return r < 1 - tolerance if higher_better else r > 1 + tolerance


def fmt_ratio(r, higher_better, flag):
    if r is None:
        return "n/a"
    text = f"{r:.2f}"
    if flag and is_worse(r, higher_better):
        text += " (worse)"
    return text


class Report:
    def __init__(self, meta, settings, scenarios, runs, capacity):
        self.meta = meta
        self.settings = settings
        self.scenarios = scenarios
        self.runs = runs            # list of RunResult
        self.capacity = capacity    # {pooler: [dict per rep]} or None

    def run_cell(self, scenario, contestant, metric):
        values = [getattr(r, metric) for r in self.runs
                  if r.scenario == scenario.key and r.contestant == contestant and r.ok]
        return Cell(values)

    def capacity_cell(self, pooler, metric):
        if not self.capacity or pooler not in self.capacity:
            return None
        part, key = CAPACITY_SOURCES.get(metric, ("idle", metric))
        values = []
        for rep in self.capacity[pooler]:
            measured = rep.get(part) or {}
            if not measured.get("error"):
                values.append(measured.get(key))
        return Cell(values)

    def short_windows(self):
        """Runs whose initial connections ate more than a fifth of the intended duration."""
        d = self.settings.get("duration")
        out = []
        for r in self.runs:
            c = r.extra.get("connect_s")
            if r.ok and d and c is not None and r.extra.get("T", 0) - c < 0.8 * d:
                out.append(f"{r.scenario} / {LABELS[r.contestant]} / rep {r.rep}: initial "
                           f"connections took {c:.1f} s of -T {r.extra['T']} s, leaving "
                           f"{r.extra['T'] - c:.1f} s measured (raise --connect-allowance-ms)")
        return out

    def failures(self):
        lines = [f"{r.scenario} / {LABELS[r.contestant]} / rep {r.rep}: {r.error}"
                 for r in self.runs if not r.ok]
        for pooler, reps in (self.capacity or {}).items():
            for i, rep in enumerate(reps, 1):
                for part in CAPACITY_PARTS:
                    if (rep.get(part) or {}).get("error"):
                        lines.append(f"capacity {part} / {LABELS[pooler]} / rep {i}: "
                                     f"{rep[part]['error']}")
        return lines

    def worse_cells(self):
        out = []
        for key, label, unit, higher, scale, dec in RUN_METRICS:
            for s in self.scenarios:
                r = ratio(self.run_cell(s, "pgwarden", key), self.run_cell(s, "pgbouncer", key))
                if is_worse(r, higher):
                    out.append(f"{label}, {s.title}: pgwarden/PgBouncer = {r:.2f}")
        for key, label, unit, higher, scale, dec in CAPACITY_METRICS:
            if key in CAPACITY_UNFLAGGED:
                continue
            r = ratio(self.capacity_cell("pgwarden", key), self.capacity_cell("pgbouncer", key))
            if is_worse(r, higher):
                out.append(f"{label}: pgwarden/PgBouncer = {r:.2f}")
        return out

    # ---- markdown --------------------------------------------------------------------------

    def markdown(self):
        out = io.StringIO()
        w = out.write
        w(f"# pgwarden vs PgBouncer vs direct: {self.settings['date']}\n\n")
        w("## Machine\n\n")
        for k, v in self.meta.items():
            w(f"- **{k}**: {v}\n")
        w(f"- **load average** at start / end: {self.settings['load_start']} / "
          f"{self.settings['load_end']}\n\n")
        w("## Settings\n\n")
        for k, v in self.settings["described"].items():
            w(f"- **{k}**: {v}\n")
        w("\nCells are `median (min–max)` over the repetitions; ratios are of medians. "
          "\"(worse)\" marks a pgwarden/PgBouncer ratio more than 5% on the wrong side "
          "(TPS and logins/s: higher is better; everything else: lower is better).\n\n")
        for key, label, unit, higher, scale, dec in (RUN_METRICS if self.scenarios else []):
            pooler_only = key in POOLER_ONLY
            w(f"### {label} ({unit}, {'higher' if higher else 'lower'} is better)\n\n")
            w("| scenario | pgwarden | PgBouncer | direct | pgwarden/PgBouncer | "
              "pgwarden/direct |\n|---|---:|---:|---:|---:|---:|\n")
            for s in self.scenarios:
                cells = {c: self.run_cell(s, c, key) for c in CONTESTANTS}
                if all(cell is None or not cell.n for cell in cells.values()):
                    continue  # a figure this scenario does not have (connection time without -C)
                r_pgb = ratio(cells["pgwarden"], cells["pgbouncer"])
                r_dir = None if pooler_only else ratio(cells["pgwarden"], cells["direct"])
                w(f"| {s.title} | {fmt_cell(cells['pgwarden'], scale, dec)} | "
                  f"{fmt_cell(cells['pgbouncer'], scale, dec)} | "
                  f"{'n/a' if pooler_only else fmt_cell(cells['direct'], scale, dec)} | "
                  f"{fmt_ratio(r_pgb, higher, True)} | {fmt_ratio(r_dir, higher, False)} |\n")
            w("\n")
        if self.capacity:
            st = self.settings
            storm = (f"; a storm of {st['storm_logins']:,} logins, {st['storm_in_flight']} in "
                     f"flight, RSS after it read {st['storm_settle']:g} s after the last login"
                     if st.get("storm_logins") else "")
            w(f"### Capacity ({st['idle_clients']:,} idle clients; {st['logins']:,} sequential "
              f"logins{storm}; {st['capacity_reps']} repetition(s))\n\n")
            w("| measurement | pgwarden | PgBouncer | direct | pgwarden/PgBouncer | "
              "pgwarden/direct |\n|---|---:|---:|---:|---:|---:|\n")
            for key, label, unit, higher, scale, dec in CAPACITY_METRICS:
                a = self.capacity_cell("pgwarden", key)
                b = self.capacity_cell("pgbouncer", key)
                flag = key not in CAPACITY_UNFLAGGED
                w(f"| {label} ({unit}) | {fmt_cell(a, scale, dec)} | {fmt_cell(b, scale, dec)} | "
                  f"n/a | {fmt_ratio(ratio(a, b), higher, flag)} | n/a |\n")
            w("\n")
            for pooler, reps in self.capacity.items():
                for i, rep in enumerate(reps, 1):
                    idle = rep.get("idle") or {}
                    login = rep.get("login") or {}
                    storm = rep.get("storm") or {}
                    storm_text = (f"; storm: {storm.get('connected', 0):,} clients let in, "
                                  f"refused {storm.get('refused', {})}, in "
                                  f"{storm.get('storm_s', 0):.1f}s, RSS each second after it "
                                  f"{[round(kb / 1024, 1) for kb in storm.get('rss_series_kb', [])]}"
                                  f" MiB" if storm and not storm.get("error") else "")
                    w(f"- {LABELS[pooler]} rep {i}: {idle.get('connected', 0):,} idle clients "
                      f"connected in {idle.get('connect_s', 0):.1f}s, "
                      f"open-files limit {idle.get('fd_limit')}; "
                      f"{login.get('logins', 0):,} logins in {login.get('seconds', 0):.1f}s"
                      f"{storm_text}\n")
            w("\n")
        worse = self.worse_cells()
        w("## pgwarden worse than PgBouncer (by more than 5%)\n\n")
        w("".join(f"- {line}\n" for line in worse) if worse else "- none\n")
        short = self.short_windows()
        if short:
            w("\n## Short measurement windows\n\n")
            w("".join(f"- {line}\n" for line in short))
        w("\n## Failures\n\n")
        fails = self.failures()
        w("".join(f"- {line}\n" for line in fails) if fails else "- none\n")
        for r in self.runs:
            if not r.ok and r.extra.get("output_tail"):
                w(f"\n<details><summary>pgbench output: {r.scenario} / {LABELS[r.contestant]} "
                  f"/ rep {r.rep}</summary>\n\n```\n{r.extra['output_tail']}\n```\n</details>\n")
        return out.getvalue()

    # ---- CSV -------------------------------------------------------------------------------

    def csv(self):
        out = io.StringIO()
        wr = csv.writer(out)
        header = ["section", "scenario", "title", "metric", "unit", "higher_is_better"]
        for c in CONTESTANTS:
            header += [f"{c}_median", f"{c}_min", f"{c}_max", f"{c}_n"]
        header += ["ratio_pgwarden_pgbouncer", "ratio_pgwarden_direct"]
        wr.writerow(header)
        for k, v in list(self.meta.items()) + [("date", self.settings["date"])] + \
                list(self.settings["described"].items()):
            wr.writerow(["meta", k, v] + [""] * (len(header) - 3))

        def num(x, scale=1):
            return "" if x is None else f"{x * scale:.6g}"

        def cells_row(section, key_, title, metric, unit, higher, cells, scale):
            row = [section, key_, title, metric, unit, int(higher)]
            for c in CONTESTANTS:
                cell = cells.get(c)
                if cell is None or not cell.n:
                    row += ["", "", "", 0]
                else:
                    row += [num(cell.median(), scale), num(cell.min(), scale),
                            num(cell.max(), scale), cell.n]
            r1 = ratio(cells.get("pgwarden"), cells.get("pgbouncer"))
            r2 = ratio(cells.get("pgwarden"), cells.get("direct"))
            row += [num(r1), num(r2)]
            wr.writerow(row)

        for key, label, unit, higher, scale, dec in RUN_METRICS:
            pooler_only = key in POOLER_ONLY
            for s in self.scenarios:
                cells = {c: self.run_cell(s, c, key) for c in CONTESTANTS
                         if not (pooler_only and c == "direct")}
                cells_row("pgbench", s.key, s.title, key, unit, higher, cells, scale)
        if self.capacity:
            for key, label, unit, higher, scale, dec in CAPACITY_METRICS:
                cells = {p: self.capacity_cell(p, key) for p in ("pgwarden", "pgbouncer")}
                cells_row("capacity", key, label, key, unit, higher, cells, scale)
        return out.getvalue()

    def runs_csv(self):
        out = io.StringIO()
        wr = csv.writer(out)
        fields = ["scenario", "contestant", "rep", "ok", "tps", "processed", "failed",
                  "lat_avg_ms", "lat_p99_ms", "conn_avg_ms", "cpu_us_per_tx", "sys_us_per_tx",
                  "preempted_per_tx", "peak_rss_kb",
                  "end_rss_kb", "wall_s", "error"]
        extras = ["T", "connect_s", "window_s"]
        wr.writerow(fields + [f"pgbench_{e}" for e in extras])
        for r in self.runs:
            wr.writerow([getattr(r, f) if getattr(r, f) is not None else "" for f in fields]
                        + [r.extra.get(e, "") for e in extras])
        return out.getvalue()
