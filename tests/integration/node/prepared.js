// node-postgres named queries (protocol-level prepared statements) through a transaction-mode
// pool: PGW_CLIENTS clients, each looping over 10 named statements for PGW_SECONDS seconds and
// checking every result. Prints one JSON line: {"ops": n, "errors": n, "first_error": "..."}.
const { Client } = require('pg');

async function worker(id, deadline, tally) {
  const client = new Client({ connectionString: process.env.PGW_URL, connectionTimeoutMillis: 60000 });
  await client.connect();
  try {
    for (let i = 0; i === 0 || Date.now() < deadline; i++) {  // at least one each
      const k = i % 10;
      try {
        const r = await client.query({ name: 'node_q' + k, text: `SELECT $1::int + ${k} AS v`, values: [id] });
        if (r.rows[0].v !== id + k) throw new Error(`client ${id}: got ${r.rows[0].v}, want ${id + k}`);
        tally.ops++;
      } catch (err) {
        tally.errors++;
        if (!tally.first_error) tally.first_error = String(err.message || err);
      }
    }
  } finally {
    await client.end();
  }
}

async function main() {
  const clients = Number(process.env.PGW_CLIENTS || 200);
  const deadline = Date.now() + 1000 * Number(process.env.PGW_SECONDS || 30);
  const tally = { ops: 0, errors: 0, first_error: '' };
  await Promise.all(Array.from({ length: clients }, (_, id) => worker(id, deadline, tally)));
  console.log(JSON.stringify(tally));
}

main().catch((err) => { console.error(err); process.exit(1); });
