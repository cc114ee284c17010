#!/usr/bin/python3
"""The demo behind scripts/demo: a throwaway PostgreSQL 15, pgwarden in front, real clients."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402

POOL_SIZE = 5

# A typical leak: psycopg2 opens a transaction implicitly (its own BEGIN), the code runs one
# tagged query and never commits or closes.
LEAKY_APP = """
import sys, time, psycopg2
conn = psycopg2.connect(sys.argv[1], application_name="checkout-svc")
cur = conn.cursor()
cur.execute("SELECT count(*) FROM pgbench_accounts /* route='checkout',controller='cart' */")
print("checkout-svc: ran its query, left the transaction open", flush=True)
time.sleep(60)
"""
CLIENTS = 50


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(cmd, env=None):
    print("$ " + " ".join(cmd), flush=True)
    result = harness.run(cmd, env=env, timeout=120, check=False)
    print((result.stdout + result.stderr).rstrip(), flush=True)
    return result


def main():
    harness.raise_nofile()
    step("starting a throwaway PostgreSQL 15")
    with harness.Postgres() as pg:
        print(f"PostgreSQL on 127.0.0.1:{pg.port}, data in {pg.data}")
        step(f"starting pgwarden in front of it (transaction pooling, pool_size={POOL_SIZE})")
        with harness.Pgwarden(pg, default_pool_size=POOL_SIZE, log_connections=0,
                              log_disconnections=0, admin_users="scram_user",
                              leak_warn_after=2) as pgw:
            print(f"pgwarden on 127.0.0.1:{pgw.port}, config {pgw.ini}:")
            with open(pgw.ini) as f:
                print("    " + f.read().replace("\n", "\n    "))

            step("psql through pgwarden (SCRAM-SHA-256 login)")
            show(["psql", "-X", "-d", pgw.dsn(), "-c",
                  "SELECT current_user, inet_server_port() AS postgres_port, version()"])

            step(f"pgbench: {CLIENTS} clients for 5 s on a pool of {POOL_SIZE} server connections")
            env = {"PGPASSWORD": "scram_pw"}
            harness.run(["pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(pgw.port),
                         "-U", "scram_user", "pgwarden_test"], env=env, timeout=120)
            peak = [0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], pg.backend_count(user="scram_user"))
                    stop.wait(0.1)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            result = show(["pgbench", "-S", "-n", "-c", str(CLIENTS), "-j", "2", "-T", "5",
                           "-h", "127.0.0.1", "-p", str(pgw.port), "-U", "scram_user",
                           "pgwarden_test"], env=env)
            stop.set()
            sampler.join()
            print(f"\n{CLIENTS} client connections were served by at most {peak[0]} PostgreSQL "
                  f"backends (pool_size={POOL_SIZE}).")
            if result.returncode != 0 or peak[0] > POOL_SIZE:
                print("demo: unexpected result", file=sys.stderr)
                return 1

            step("the leak guard: an app that leaves a transaction open")
            leaky = subprocess.Popen(["/usr/bin/python3", "-c", LEAKY_APP, pgw.dsn()],
                                     stdout=subprocess.PIPE, text=True)
            try:
                print(leaky.stdout.readline().rstrip())
                time.sleep(3)  # past leak_warn_after = 2 s
                console = ["psql", "-X", "-d", pgw.dsn(db="pgbouncer"), "-x", "-c"]
                result = show(console + ["SHOW LEAKS"])
                if "checkout-svc" not in result.stdout or "route=checkout" not in result.stdout:
                    print("demo: the leaking client is missing from SHOW LEAKS", file=sys.stderr)
                    return 1
                print("\npgwarden's log:")
                for line in pgw.log().splitlines():
                    if "leak suspected" in line:
                        print("    " + line)
                show(["psql", "-X", "-d", pgw.dsn(db="pgbouncer"), "-c", "SHOW POOLS"])
            finally:
                leaky.kill()
                leaky.wait()

            step("clear errors instead of hangs")
            show(["psql", "-X", "-d", pgw.dsn(password="wrong"), "-c", "SELECT 1"])
            show(["psql", "-X", "-d", pgw.dsn(db="no_such_db"), "-c", "SELECT 1"])
    step("stopped pgwarden and PostgreSQL; done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
