// graphql-http's server audit against a running Shareflow: `node audit.mjs URL [API_KEY]`.
// Prints one JSON document: [{id, name, status, reason}] (status: ok, warn, error; warn is a
// failed SHOULD or MAY, error a failed MUST). An API key, when given, goes in every request's
// Authorization header through the fetchFn wrapper; the audit's documents only read the schema
// (`{ __typename }`, `__type`), which Shareflow answers without one.
import { auditServer } from 'graphql-http';

const [url, apiKey] = process.argv.slice(2);
if (!url) {
  console.error('usage: node audit.mjs URL [API_KEY]');
  process.exit(2);
}

function fetchFn(input, init = {}) {
  if (!apiKey) return fetch(input, init);
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${apiKey}`);
  return fetch(input, { ...init, headers });
}

const results = await auditServer({ url, fetchFn });
const report = await Promise.all(
  results.map(async (result) => {
    const row = { id: result.id, name: result.name, status: result.status };
    if (result.status !== 'ok') {
      row.reason = result.reason;
      if (result.response) {
        row.response = { status: result.response.status, contentType: result.response.headers.get('content-type') };
        try {
          row.response.body = await result.response.text();
        } catch {
          // the audit may have read it already
        }
      }
    }
    return row;
  }),
);
console.log(JSON.stringify(report));
