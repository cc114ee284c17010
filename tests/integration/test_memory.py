#!/usr/bin/python3
"""Memory after a storm of logins (issue 19).

node-postgres logs in LOGINS clients, IN_FLIGHT at a time, with an application_name that an
`[apps]` max_client_conn caps at KEPT: KEPT clients stay connected and idle, the others are
refused with 53300. What the logins allocated for a moment must go back to the kernel once they
are over (the janitor's malloc_trim, src/app/runtime.cpp): pgwarden's RSS after the storm may
exceed what KEPT idle clients cost without a storm, measured in the same test with the same
client, by at most 1.5 KiB per client. Without the trim it held 3-6 KiB more per client, with
it 0.3-0.5 (docs/benchmarks.md, "Login storm"). The storm is sized so that it fails without the
trim on a loaded 2-core machine too (a slower client puts fewer logins in flight at once).

The RSS bound is a property of glibc's malloc: a sanitized pgwarden (scripts/test's second
stage) allocates through ASan instead, so there the storm runs and pgwarden must still serve
its clients, but the bound is not checked (the test says so in its output).
"""
import json
import os
import subprocess
import threading
import time

import harness
from common import pg

HERE = os.path.dirname(os.path.abspath(__file__))
LOGINS = 6000
IN_FLIGHT = 500
KEPT = 1000
MARGIN_KIB = 1.5    # per client still connected, over the idle figure
SETTLE_S = 10.0     # the storm's RSS must be within the margin this long after its last login
IDLE_SETTLE_S = 3.0


class AppsPgwarden(harness.Pgwarden):
    """A Pgwarden whose ini also has an [apps] section (the harness writes only the others)."""

    def __init__(self, *args, apps, **kwargs):
        super().__init__(*args, **kwargs)
        self.apps = apps

    def write_config(self):
        super().write_config()
        with open(self.ini, "a") as f:
            f.write("[apps]\n" + "".join(f"{k} = {v}\n" for k, v in self.apps.items()))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def sanitized(pid):
    """True when pgwarden runs with ASan, TSan or UBSan's runtime (their own allocator)."""
    with open(f"/proc/{pid}/maps") as f:
        return any(name in f.read() for name in ("libasan", "libtsan", "libubsan"))


class Storm:
    """tests/integration/node/storm.js: `logins` node-postgres logins, `in_flight` at a time,
    as application `app`; the clients let in stay connected until end()."""

    def __init__(self, pw, logins, app):
        env = dict(os.environ, PGW_URL=pw.url(), NODE_PATH=os.path.join(HERE, "node_modules"),
                   STORM_TOTAL=str(logins), STORM_IN_FLIGHT=str(IN_FLIGHT), STORM_APP=app)
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "node", "storm.js")], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.result = self.reply("STORM", timeout=120)

    def reply(self, tag, timeout):
        # node prints one line per command; killed if it hangs, so readline() returns.
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        assert line.startswith(tag + " "), f"storm.js said {line!r} (exit {self.proc.poll()})"
        return json.loads(line.split(" ", 1)[1])

    def query_all(self):
        self.proc.stdin.write("query\n")
        self.proc.stdin.flush()
        return self.reply("QUERY", timeout=60)

    def end(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("end\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def baseline(pw):
    """pgwarden's RSS once it has a pool and a server connection, as before any storm."""
    harness.psql(pw.dsn(), "SELECT 1")
    time.sleep(1.0)
    return rss_kib(pw.pid)


def kib_per_client(rss, before, clients):
    return (rss - before) / clients


def idle_figure(p, kept):
    """KiB per client of `kept` clients logged in as the storm's are, IN_FLIGHT at a time, none
    refused, on a fresh pgwarden a few seconds after the last login."""
    with AppsPgwarden(p, apps={"storm": f"max_client_conn={kept}"}) as pw:
        before = baseline(pw)
        idle = Storm(pw, kept, "idle")
        try:
            assert idle.result["connected"] == kept, idle.result
            time.sleep(IDLE_SETTLE_S)
            return kib_per_client(rss_kib(pw.pid), before, kept)
        finally:
            idle.end()


def test_rss_after_login_storm_returns_to_idle_figure():
    p = pg()
    with AppsPgwarden(p, apps={"storm": f"max_client_conn={KEPT}"}) as pw:
        checked = not sanitized(pw.pid)
    if checked:
        logins, kept = LOGINS, KEPT
        idle_kib = idle_figure(p, kept)
        bound = idle_kib + MARGIN_KIB
    else:
        # The bound says nothing about ASan's allocator: a smaller storm, for the sanitizers'
        # sake (refusals, error writers and logins by the hundred), and no idle figure.
        print("    sanitized pgwarden (ASan's allocator, not glibc's): the RSS bound is not "
              "checked", flush=True)
        logins, kept = LOGINS // 4, KEPT // 4
        idle_kib = bound = None

    # The storm, on a fresh pgwarden: most logins are refused by the [apps] cap.
    with AppsPgwarden(p, apps={"storm": f"max_client_conn={kept}"}) as pw:
        before = baseline(pw)
        storm = Storm(pw, logins, "storm")
        try:
            result = storm.result
            assert result["connected"] == kept, result
            assert result["refusals"] == {"53300": logins - kept}, result
            ended = time.monotonic()
            if checked:
                # Wait for the memory to go back, at most SETTLE_S after the last login.
                while True:
                    storm_kib = kib_per_client(rss_kib(pw.pid), before, kept)
                    if storm_kib <= bound or time.monotonic() - ended >= SETTLE_S:
                        break
                    time.sleep(0.25)
                print(f"    RSS per connected client: idle {idle_kib:.2f} KiB, after the storm "
                      f"{storm_kib:.2f} KiB ({time.monotonic() - ended:.1f} s after its last "
                      f"login; bound {bound:.2f})", flush=True)
                assert storm_kib <= bound, (
                    f"{SETTLE_S:g} s after a storm of {logins} logins ({IN_FLIGHT} in flight, "
                    f"{kept} let in) pgwarden holds {storm_kib:.2f} KiB per connected client, "
                    f"more than the {idle_kib:.2f} KiB of {kept} idle clients + {MARGIN_KIB} KiB")
            # Still serving: every client that got in runs a query, a new client too.
            answered = storm.query_all()
            assert answered == {"ok": kept, "failed": 0, "first_error": None}, answered
            assert harness.psql(pw.dsn(), "SELECT 41 + 1").stdout.strip() == "42"
        finally:
            storm.end()


if __name__ == "__main__":
    harness.main(globals())
