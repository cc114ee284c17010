// node-postgres through pgwarden: parameterized queries, a transaction, a pool of clients.
const { Client, Pool } = require('pg');

async function main() {
  const client = new Client({ connectionString: process.env.PGW_URL, connectionTimeoutMillis: 10000 });
  await client.connect();
  const sum = await client.query('SELECT $1::int + $2::int AS s', [20, 22]);
  if (sum.rows[0].s !== 42) throw new Error('bad sum ' + JSON.stringify(sum.rows));
  await client.query('CREATE TABLE IF NOT EXISTS t_node (id int, v text)');
  await client.query('BEGIN');
  await client.query('TRUNCATE t_node');
  for (let i = 0; i < 20; i++) await client.query('INSERT INTO t_node VALUES ($1, $2)', [i, 'v' + i]);
  await client.query('COMMIT');
  const count = await client.query('SELECT count(*)::int AS c FROM t_node');
  if (count.rows[0].c !== 20) throw new Error('bad count ' + count.rows[0].c);
  await client.end();

  const pool = new Pool({ connectionString: process.env.PGW_URL, max: 20 });
  const results = await Promise.all(
    Array.from({ length: 100 }, (_, i) => pool.query('SELECT $1::int AS i', [i])));
  results.forEach((r, i) => { if (r.rows[0].i !== i) throw new Error('mismatch at ' + i); });
  await pool.end();
  console.log('node-postgres ok');
}

main().catch((err) => { console.error(err); process.exit(1); });
