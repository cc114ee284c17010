// A login storm with node-postgres (issue 19): STORM_TOTAL clients log in with SCRAM,
// STORM_IN_FLIGHT at a time, all with application_name STORM_APP, which an [apps]
// max_client_conn caps; the clients that get in stay connected, the others are refused
// (FATAL 53300). Once every login has ended, one line "STORM {json}" is printed with the counts,
// and the kept clients stay idle until stdin says "query" (each kept client runs SELECT 1) or
// "end" / EOF (they all disconnect and the process exits).
//
//   PGW_URL=postgresql://user:pw@127.0.0.1:port/db STORM_TOTAL=4000 STORM_IN_FLIGHT=300 \
//   STORM_APP=storm NODE_PATH=tests/integration/node_modules node storm.js
const { Client } = require('pg');
const readline = require('readline');

const total = Number(process.env.STORM_TOTAL || 4000);
const inFlight = Number(process.env.STORM_IN_FLIGHT || 300);
const app = process.env.STORM_APP || 'storm';

async function storm() {
  const kept = [];
  const refusals = {};  // SQLSTATE (or error text) -> count
  let next = 0;
  const started = Date.now();
  async function lane() {
    while (next < total) {
      next += 1;
      const client = new Client({
        connectionString: process.env.PGW_URL,
        application_name: app,
        connectionTimeoutMillis: 60000,
      });
      // A refused client's socket may still report an error after connect() failed.
      client.on('error', () => {});
      try {
        await client.connect();
        kept.push(client);
      } catch (err) {
        const key = err.code || String(err.message).slice(0, 80);
        refusals[key] = (refusals[key] || 0) + 1;
      }
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane));
  return { kept, refusals, seconds: (Date.now() - started) / 1000 };
}

async function main() {
  const { kept, refusals, seconds } = await storm();
  console.log('STORM ' + JSON.stringify({ total, connected: kept.length, refusals, seconds }));
  const commands = readline.createInterface({ input: process.stdin });
  for await (const line of commands) {
    if (line.trim() === 'query') {
      const results = await Promise.allSettled(kept.map((c) => c.query('SELECT 1 AS one')));
      const failed = results.filter((r) => r.status !== 'fulfilled' || r.value.rows[0].one !== 1);
      console.log('QUERY ' + JSON.stringify({ ok: results.length - failed.length,
        failed: failed.length,
        first_error: failed.length ? String(failed[0].reason) : null }));
    } else if (line.trim() === 'end') {
      break;
    }
  }
  await Promise.allSettled(kept.map((c) => c.end()));
  process.exit(0);
}

main().catch((err) => { console.error(err); process.exit(1); });
