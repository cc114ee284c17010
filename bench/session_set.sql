-- The session-state guard's row (bench/scenarios.py, S-set-c100): pgbench -S with a SET of
-- search_path in the same query string, so every transaction creates session state that
-- session_state = track keeps for the client and re-applies where it lands.
\set aid random(1, 100000)
SET search_path TO public, pg_catalog \; SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
