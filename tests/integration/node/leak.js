// node-postgres leaking a transaction: BEGIN, two tagged statements, then the client holds the
// transaction open until its stdin closes (the test reads SHOW LEAKS meanwhile).
const { Client } = require('pg');

async function main() {
  const client = new Client({ connectionString: process.env.PGW_URL, connectionTimeoutMillis: 10000 });
  await client.connect();
  await client.query('BEGIN');
  await client.query("SELECT $1::int AS id /* route='/api/orders',framework='express' */", [7]);
  await client.query("SELECT count(*) FROM pg_class WHERE relname = $1 /* route='/api/orders',step='count' */",
    ['pg_type']);
  console.log('holding');
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.on('end', resolve));
  await client.query('ROLLBACK');
  await client.end();
  console.log('released');
}

main().catch((err) => { console.error(err); process.exit(1); });
