#!/usr/bin/python3
"""auth_query (docs/configuration.md#authentication): users not in auth_file are looked up in
pg_authid as auth_user; SCRAM users log in to pgwarden and, through it, to PostgreSQL with no
plaintext password anywhere (SCRAM pass-through with the client's proof); md5 users; an
expired role and an unknown one refused as a wrong password; a SECURITY DEFINER function as the
query; per-database auth_user/auth_dbname; a failing query; a password changed in PostgreSQL."""
import harness
from common import pg

AUTH_USER, AUTH_PW = "auth_reader", "auth_reader_pw"
_prepared = False


def prepare():
    """The roles and the function, once per PostgreSQL."""
    global _prepared
    if _prepared:
        return
    p = pg()
    p.sql(f"CREATE ROLE {AUTH_USER} LOGIN SUPERUSER PASSWORD '{AUTH_PW}'")
    p.sql("CREATE ROLE expired_user LOGIN PASSWORD 'expired_pw' VALID UNTIL '2001-01-01'")
    p.sql("CREATE ROLE changing_user LOGIN PASSWORD 'first_pw'")
    p.sql("GRANT ALL ON DATABASE pgwarden_test TO changing_user")
    # The usual alternative to a superuser auth_user: a SECURITY DEFINER function owned by one,
    # which a plain role may call.
    p.sql("CREATE ROLE auth_caller LOGIN PASSWORD 'auth_caller_pw'")
    p.sql("""CREATE SCHEMA pgbouncer;
CREATE FUNCTION pgbouncer.get_auth(p_usename text) RETURNS TABLE(username text, password text)
LANGUAGE sql SECURITY DEFINER AS $$
  SELECT rolname::text, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
  FROM pg_authid WHERE rolname = p_usename AND rolcanlogin $$;
REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbouncer TO auth_caller;
GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO auth_caller;""", db="pgwarden_test")
    _prepared = True


def start(auth_type="scram-sha-256", userlist=None, **settings):
    prepare()
    if userlist is None:
        userlist = {AUTH_USER: AUTH_PW}
    return harness.Pgwarden(pg(), auth_type=auth_type, userlist=userlist, auth_user=AUTH_USER,
                            **settings)


def login(pw, user, password, db="pgwarden_test"):
    """The server-side user of a session through pgwarden, or the error."""
    import psycopg
    try:
        with psycopg.connect(pw.dsn(user=user, password=password, db=db),
                             autocommit=True) as conn:
            return conn.execute("SELECT current_user").fetchone()[0]
    except psycopg.OperationalError as e:
        return e


def assert_refused(result, text, sqlstate=None):
    assert isinstance(result, Exception), result
    assert text in str(result), result
    if sqlstate:
        assert getattr(result, "sqlstate", None) in (sqlstate, None), (result.sqlstate, result)


def test_scram_users_need_no_secret_in_pgwarden():
    with start() as pw:
        # scram_user is not in auth_file: its verifier comes from pg_authid, the client proves
        # its password to pgwarden, and pgwarden's server login uses that proof.
        assert login(pw, "scram_user", "scram_pw") == "scram_user"
        assert pg().backend_count(user="scram_user") >= 1
        assert_refused(login(pw, "scram_user", "wrong"), "password authentication failed")
        # Unknown and expired roles fail like a wrong password (no hint which users exist).
        assert_refused(login(pw, "nobody_here", "x"), "password authentication failed")
        assert_refused(login(pw, "expired_user", "expired_pw"), "password authentication failed")
        # The secret is never logged.
        assert "SCRAM-SHA-256$" not in pw.log()


def test_md5_users():
    with start(auth_type="md5") as pw:
        assert login(pw, "md5_user", "md5_pw") == "md5_user"
        assert_refused(login(pw, "md5_user", "nope"), "password authentication failed")
        # A SCRAM user with auth_type = md5: the exchange switches to SCRAM, as PostgreSQL's.
        assert login(pw, "scram_user", "scram_pw") == "scram_user"


def test_security_definer_function_and_per_database_settings():
    databases = {
        # Global auth_user (a superuser) for pgwarden_test...
        "pgwarden_test": f"host=127.0.0.1 port={pg().port} dbname=pgwarden_test",
        # ...a plain role and the function for this entry, run in pgwarden_test's pool.
        "via_function": f"host=127.0.0.1 port={pg().port} dbname=pgwarden_test "
                        "auth_user=auth_caller auth_dbname=pgwarden_test "
                        "auth_query='SELECT * FROM pgbouncer.get_auth($1)'",
    }
    userlist = {AUTH_USER: AUTH_PW, "auth_caller": "auth_caller_pw"}
    with start(userlist=userlist, databases=databases) as pw:
        assert login(pw, "scram_user", "scram_pw", db="via_function") == "scram_user"
        assert_refused(login(pw, "expired_user", "expired_pw", db="via_function"),
                       "password authentication failed")
        # DISABLE of the database auth_query runs in refuses the lookups (PgBouncer's text).
        console = f"host={pw.dir} port={pw.port} dbname=pgbouncer user=pgbouncer"
        harness.psql(console, "DISABLE pgwarden_test")
        assert_refused(login(pw, "scram_user", "scram_pw", db="via_function"),
                       'authentication database "pgwarden_test" is disabled')
        harness.psql(console, "ENABLE pgwarden_test")
        assert login(pw, "scram_user", "scram_pw", db="via_function") == "scram_user"
    # Without a global auth_user only the entry that names one looks users up.
    with harness.Pgwarden(pg(), userlist=userlist, databases=databases) as pw:
        assert login(pw, "scram_user", "scram_pw", db="via_function") == "scram_user"
        assert_refused(login(pw, "app_user", "app_pw"), "password authentication failed")


def test_a_failing_query_refuses_with_the_reason():
    with start(auth_query="SELECT no_such_column FROM pg_authid WHERE rolname=$1") as pw:
        result = login(pw, "scram_user", "scram_pw")
        assert_refused(result, "authentication query failed")
        assert "no_such_column" in str(result), result
        assert "auth_query for user \"scram_user\"" in pw.log()
    # Two columns are needed.
    with start(auth_query="SELECT rolname FROM pg_authid WHERE rolname=$1") as pw:
        assert_refused(login(pw, "scram_user", "scram_pw"), "two columns")


def test_a_password_changed_in_postgresql_applies_to_new_logins():
    with start() as pw:
        assert login(pw, "changing_user", "first_pw") == "changing_user"
        pg().sql("ALTER ROLE changing_user PASSWORD 'second_pw'")
        assert_refused(login(pw, "changing_user", "first_pw"), "password authentication failed")
        assert login(pw, "changing_user", "second_pw") == "changing_user"
        # Users in auth_file are not looked up: the file's password is the one that counts.
    with start(userlist={AUTH_USER: AUTH_PW, "changing_user": "file_pw"}) as pw:
        assert_refused(login(pw, "changing_user", "second_pw"), "password authentication failed")


if __name__ == "__main__":
    harness.main(globals())
