"""Shared fixtures for the integration tests: one PostgreSQL per test file."""
import atexit

import harness

_pg = None


def pg():
    """The file's PostgreSQL, started on first use and stopped at exit."""
    global _pg
    if _pg is None:
        _pg = harness.Postgres().__enter__()
        atexit.register(_pg.cleanup)
    return _pg
