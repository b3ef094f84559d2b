// Runs graphql-http's GraphQL-over-HTTP audits against a Kontakt server.
// Usage: node audit.mjs <graphql url> <bearer token>. Exits 1 when a MUST audit fails.
import { auditServer } from 'graphql-http';

const [url, token] = process.argv.slice(2);
if (!url || !token) {
  console.error('usage: node audit.mjs <url> <token>');
  process.exit(2);
}

// Every Kontakt operation needs a bearer token; the audits themselves send none.
const fetchFn = (input, init = {}) => {
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  return fetch(input, { ...init, headers });
};

const results = await auditServer({ url, fetchFn });
const counts = { ok: 0, warn: 0, error: 0, notice: 0 };
for (const result of results) {
  counts[result.status] = (counts[result.status] ?? 0) + 1;
  if (result.status !== 'ok') {
    console.log(`${result.status.toUpperCase()} ${result.id} ${result.name}: ${result.reason ?? ''}`);
  }
}
console.log(`graphql-http audit: ${counts.ok} ok, ${counts.warn} SHOULD/MAY warnings, ${counts.error} MUST failures, ${counts.notice} notices`);
process.exit(counts.error > 0 ? 1 : 0);
