// Checks Kontakt's responses against its own schema with graphql-js, as strict clients (Apollo's normalized cache,
// typed codegen) read them: the standard introspection query of graphql-js 16 must work, and every response must
// have each selected field present (a failed nullable field is `null`, never missing) and no `null` where the
// schema says non-null.
// Usage: node contract.mjs <graphql url> <writer token> <reader token>. Exits 1 on the first violation.
import { buildClientSchema, execute, getIntrospectionQuery, parse, validate } from 'graphql';

const [url, writer, reader] = process.argv.slice(2);
if (!url || !writer || !reader) {
  console.error('usage: node contract.mjs <url> <writer token> <reader token>');
  process.exit(2);
}

async function post(token, query, variables = {}) {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

function fail(message, body) {
  console.error(`contract: ${message}\n${JSON.stringify(body, null, 2)}`);
  process.exit(1);
}

// 1. The standard introspection query (graphql-js 16 defaults) at the server's default limits.
const introspection = await post(reader, getIntrospectionQuery());
if (introspection.errors) fail('the standard introspection query was refused', introspection);
const schema = buildClientSchema(introspection.data);

// Re-executes the query over the server's own response: each field resolves to the response value under its
// response key, and throws when the key is missing. graphql-js then enforces nullability exactly as the spec says.
function strictResolver(source, _args, _context, info) {
  const key = info.path.key;
  if (source === null || typeof source !== 'object' || !(key in source)) {
    throw new Error(`missing key \`${key}\` at ${JSON.stringify(pathOf(info.path))}`);
  }
  return source[key];
}
const pathOf = (path) => (path ? [...pathOf(path.prev), path.key] : []);

async function checkShape(name, token, query, variables) {
  const body = await post(token, query, variables);
  const document = parse(query);
  const invalid = validate(schema, document);
  if (invalid.length) fail(`${name}: the query does not validate against the served schema: ${invalid[0].message}`, body);
  if (body.data === undefined || body.data === null) fail(`${name}: no data`, body);
  const replay = await execute({ schema, document, rootValue: body.data, variableValues: variables, fieldResolver: strictResolver });
  // A field the server nulled because of an error: graphql-js sees `null` there too. Only shape errors count.
  const shapeErrors = (replay.errors ?? []).filter((e) => /missing key|Cannot return null for non-nullable/.test(e.message));
  if (shapeErrors.length) fail(`${name}: ${shapeErrors[0].message}`, body);
  return body;
}

// 2. A customer the reader has no consent for: profile served, history and journey refused.
const created = await post(
  writer,
  'mutation($i: UpsertCustomerInput!) { upsertCustomer(input: $i) { customer { id } } }',
  { i: { identities: [{ kind: 'EMAIL', value: `contract-${Date.now()}@example.com` }], givenName: 'Ada' } },
);
const id = created?.data?.upsertCustomer?.customer?.id;
if (!id) fail('could not create a customer', created);
const profile = `query($id: UUID!) { customer(id: $id) { id givenName identities { kind value }
  consents { purpose status } touchpoints(first: 5) { edges { cursor node { id channel } } totalCount }
  journey { currentStage stages { stage count } } } }`;
const refused = await checkShape('customer without consent', reader, profile, { id });
const codes = (refused.errors ?? []).map((e) => e.extensions?.code);
if (!codes.includes('CONSENT_REQUIRED')) fail('expected CONSENT_REQUIRED errors', refused);
if (!('touchpoints' in refused.data.customer) || refused.data.customer.touchpoints !== null) {
  fail('touchpoints must be present and null', refused);
}

// 3. A list, and a field refused for a missing scope.
await checkShape('customers list', reader, '{ customers(first: 5) { edges { node { id journey { currentStage } } } pageInfo { hasNextPage } } }', {});
console.log('contract: introspection, null for failed fields and non-null rules hold');
