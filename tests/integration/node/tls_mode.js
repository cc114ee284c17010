// One node-postgres login with the sslmode in PGW_URL: prints "tls", "clear" or "error: ...".
const { Client } = require('pg');
const tls = require('tls');

async function main() {
  const client = new Client({ connectionString: process.env.PGW_URL, connectionTimeoutMillis: 10000 });
  try {
    await client.connect();
    const one = await client.query('SELECT 1 AS one');
    if (one.rows[0].one !== 1) throw new Error('bad result');
    console.log(client.connection.stream instanceof tls.TLSSocket ? 'tls' : 'clear');
  } catch (err) {
    console.log('error: ' + err.message);
  } finally {
    await client.end().catch(() => {});
  }
}

main();
