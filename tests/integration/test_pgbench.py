#!/usr/bin/python3
"""pgbench through pgwarden: simple and extended protocol, transaction and session pooling,
TPC-B; PostgreSQL never sees more backends than the pool allows."""
import re

import harness
from common import pg

_initialized = False


def init_pgbench():
    global _initialized
    if not _initialized:
        harness.run(["pgbench", "-i", "-s", "1", "-q", pg().dsn(user="postgres")], timeout=120)
        pg().sql("GRANT ALL ON ALL TABLES IN SCHEMA public TO scram_user", db="pgwarden_test")
        _initialized = True


def pgbench(pw, *args, seconds=4):
    env = {"PGPASSWORD": "scram_pw"}
    cmd = ["pgbench", "-n", "-T", str(seconds), *args,
           "-h", "127.0.0.1", "-p", str(pw.port), "-U", "scram_user", "pgwarden_test"]
    result = harness.run(cmd, env=env, timeout=seconds + 60, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    failed = re.search(r"number of failed transactions: (\d+)", output)
    assert failed is None or failed.group(1) == "0", output
    tps = float(re.search(r"tps = ([\d.]+)", output).group(1))
    processed = int(re.search(r"number of transactions actually processed: (\d+)", output).group(1))
    assert tps > 0 and processed > 0, output
    return tps


def run_capped(pool_mode, pool_size, clients, *args):
    init_pgbench()
    with harness.Pgwarden(pg(), pool_mode=pool_mode, default_pool_size=pool_size) as pw:
        tps, peak, samples = harness.max_backends_during(
            pg(), lambda: pgbench(pw, "-c", str(clients), "-j", "2", *args), user="scram_user")
        assert samples > 10, samples
        assert 0 < peak <= pool_size, f"{peak} backends for a pool of {pool_size}"
        print(f"  {pool_mode} {' '.join(args)}: {tps:.0f} tps, peak backends {peak}/{pool_size}")


def test_select_only_simple_transaction_mode():
    run_capped("transaction", 5, 50, "-S")


def test_select_only_extended_transaction_mode():
    run_capped("transaction", 5, 50, "-S", "-M", "extended")


def test_tpcb_transaction_mode():
    run_capped("transaction", 5, 20)


def test_select_only_session_mode():
    # Session mode: one server per client, so the pool is as large as the client count.
    run_capped("session", 8, 8, "-S")


def test_extended_session_mode_prepared():
    run_capped("session", 8, 8, "-S", "-M", "prepared")


def test_new_connection_per_transaction():
    run_capped("transaction", 5, 10, "-S", "-C")


def test_one_send_per_write_without_io_uring():
    # io_uring = 0: every write is a send(), as on a kernel without io_uring. The default
    # (batched sends) is what every other test runs.
    init_pgbench()
    with harness.Pgwarden(pg(), default_pool_size=5, io_uring=0, admin_users="scram_user") as pw:
        for args in (("-S",), ("-S", "-M", "extended"), ()):
            tps = pgbench(pw, "-c", "20", "-j", "2", *args, seconds=3)
            print(f"  io_uring = 0, {' '.join(args) or 'TPC-B'}: {tps:.0f} tps")
        rows = harness.psql(pw.dsn(db="pgbouncer"), "SHOW CONFIG").stdout
        assert any(line.startswith("io_uring|0") for line in rows.splitlines()), rows


if __name__ == "__main__":
    harness.main(globals())
