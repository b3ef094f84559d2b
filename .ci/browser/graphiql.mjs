// Opens Kontakt's GraphiQL in headless Chromium and uses it as a person would: puts a bearer token in the headers
// pane, re-fetches the schema, finds the `Query` root type in the documentation explorer, runs
// `{ viewer { tenant } }` with the run button and reads the tenant in the result pane; with a writer token it also
// starts a subscription in GraphiQL (over /graphql/ws) and sees a customer written meanwhile arrive in the result.
// Offline by design: every request that leaves localhost is refused and fails the test, as does any Content
// Security Policy violation or script error on the page.
//
// Usage: node graphiql.mjs <page url, e.g. http://127.0.0.1:8080/graphiql> <reader token> [writer token]
// Reader: profiles:read (the tenant's name is checked against the token's). Writer: profiles:write, same tenant.
// Chromium: /usr/bin/chromium, or CHROMIUM=/path/to/chromium. Exits 1 with a message on the first failure, within
// 60 seconds.
import { chromium } from 'playwright-core';

const [pageUrl, reader, writer] = process.argv.slice(2);
if (!pageUrl || !reader) {
  console.error('usage: node graphiql.mjs <page url> <reader token> [writer token]');
  process.exit(2);
}
const tenant = JSON.parse(Buffer.from(reader.split('.')[1] ?? '', 'base64url').toString() || '{}').tenant;
if (!tenant) {
  console.error('graphiql: the reader token names no tenant');
  process.exit(2);
}

const DEADLINE_MS = 60_000;
const STEP_MS = 20_000;
const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);
const isLocal = (url) => {
  try {
    return LOCAL_HOSTS.has(new URL(url).hostname);
  } catch {
    return false;
  }
};

let browser;
let page;
let step = 'starting';
const log = [];
let failing = false;
async function fail(message) {
  // The first failure is the one reported; later ones (and the steps after them) wait for the exit.
  if (failing) return new Promise(() => {});
  failing = true;
  console.error(`graphiql: FAILED while ${step}: ${message}`);
  if (log.length) console.error(`page log (last 20):\n  ${log.slice(-20).join('\n  ')}`);
  const closing = browser?.close().catch(() => {});
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 3_000))]);
  process.exit(1);
}
const deadline = setTimeout(() => fail(`not done within ${DEADLINE_MS / 1000} s`), DEADLINE_MS);
const begin = (name) => {
  step = name;
  console.log(`graphiql: ${name}`);
};

try {
  begin(`launching ${process.env.CHROMIUM || '/usr/bin/chromium'}`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    timeout: STEP_MS,
  });
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP_MS);

  // Nothing may leave localhost: such a request is refused (the machine may have no internet anyway) and fails.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    route.abort('blockedbyclient').catch(() => {});
    fail(`the page requested ${url}, which is not on localhost`);
  });
  page = await context.newPage();
  page.on('websocket', (ws) => {
    log.push(`websocket ${ws.url()}`);
    if (!isLocal(ws.url())) fail(`the page opened a WebSocket to ${ws.url()}, which is not on localhost`);
  });
  page.on('console', (message) => {
    log.push(`console.${message.type()}: ${message.text()}`);
    if (/Content Security Policy/i.test(message.text())) fail(`CSP violation: ${message.text()}`);
  });
  page.on('pageerror', (error) => fail(`script error on the page: ${error.message}`));
  page.on('requestfailed', (request) => log.push(`request failed: ${request.url()} ${request.failure()?.errorText}`));
  page.on('response', (response) => {
    const url = response.url();
    log.push(`${response.status()} ${response.request().method()} ${url}`);
    if (new URL(url).pathname.includes('/graphiql/') && response.status() !== 200) {
      fail(`asset ${url} answered ${response.status()}`);
    }
  });

  begin(`opening ${pageUrl}`);
  const opened = await page.goto(pageUrl, { waitUntil: 'load' });
  if (opened?.status() !== 200) await fail(`the page answered ${opened?.status()}`);
  if (!opened.headers()['content-security-policy']) await fail('the page has no Content-Security-Policy');
  if ((await page.title()) !== 'Kontakt') await fail(`the title is ${JSON.stringify(await page.title())}`);

  begin('waiting for GraphiQL to render');
  await page.locator('.graphiql-container').waitFor();
  const run = page.locator('.graphiql-execute-button');
  await run.waitFor();

  begin('putting the bearer token into the headers editor');
  const headersTab = page.getByRole('button', { name: 'Headers', exact: true });
  if ((await headersTab.count()) > 0 && !(await page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden)').count())) {
    await headersTab.first().click();
  }
  await typeInto('.graphiql-editor-tool .graphiql-editor:not(.hidden)', JSON.stringify({ Authorization: `Bearer ${reader}` }));

  begin('re-fetching the schema with the token');
  const introspection = page.waitForResponse(
    (response) =>
      response.request().method() === 'POST' &&
      /IntrospectionQuery/.test(response.request().postData() ?? '') &&
      response.status() === 200,
  );
  await page.getByRole('button', { name: 'Re-fetch GraphQL schema' }).click();
  const schema = await (await introspection).json();
  if (!schema?.data?.__schema) await fail(`the introspection answered ${JSON.stringify(schema).slice(0, 300)}`);

  begin('finding the Query root type in the documentation explorer');
  await page.getByRole('button', { name: 'Documentation Explorer' }).click();
  const explorer = page.locator('.graphiql-doc-explorer');
  await explorer.getByText('Query', { exact: true }).first().waitFor();

  begin('running { viewer { tenant } } with the run button');
  await typeQuery('{ viewer { tenant } }', 'query');
  await run.click();
  const result = await waitForResult((body) => body?.data?.viewer?.tenant !== undefined);
  if (result.data.viewer.tenant !== tenant) {
    await fail(`the result pane shows tenant ${JSON.stringify(result.data.viewer.tenant)}, expected ${tenant}`);
  }
  if (!(await page.locator('.result-window').innerText()).includes(tenant)) {
    await fail(`the result pane does not show ${tenant}`);
  }
  console.log(`graphiql: the result pane shows tenant "${tenant}"`);

  if (writer) {
    begin('subscribing to customerChanges over /graphql/ws from GraphiQL');
    const acknowledged = new Promise((resolve) =>
      page.on('websocket', (ws) =>
        ws.on('framereceived', (frame) => {
          if (String(frame.payload).includes('connection_ack')) resolve();
        }),
      ),
    );
    await typeQuery('subscription { customerChanges { customerId created } }', 'subscription');
    await run.click();
    await Promise.race([acknowledged, new Promise((_, reject) => setTimeout(() => reject(new Error('no connection_ack within 20 s')), STEP_MS))]);

    begin('writing customers until one arrives in the result pane');
    const endpoint = new URL('graphql', pageUrl).href;
    const written = new Set();
    const arrived = waitForResult((body) => written.has(body?.data?.customerChanges?.customerId));
    let done = false;
    arrived.finally(() => (done = true)).catch(() => {});
    while (!done) {
      const response = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${writer}` },
        body: JSON.stringify({
          query: 'mutation($i: UpsertCustomerInput!) { upsertCustomer(input: $i) { customer { id } } }',
          variables: { i: { identities: [{ kind: 'EMAIL', value: `browser-${Date.now()}@example.com` }] } },
        }),
      });
      const body = await response.json();
      const id = body?.data?.upsertCustomer?.customer?.id;
      if (!id) await fail(`could not write a customer: ${JSON.stringify(body)}`);
      written.add(id);
      await Promise.race([arrived.catch(() => {}), new Promise((resolve) => setTimeout(resolve, 1_000))]);
    }
    const change = await arrived;
    console.log(`graphiql: the subscription delivered customer ${change.data.customerChanges.customerId}`);
  }

  clearTimeout(deadline);
  await browser.close();
  console.log('graphiql: ok (GraphiQL rendered offline, schema loaded, query and subscription answered)');
  process.exit(0);
} catch (error) {
  await fail(error?.message ?? String(error));
}

// CodeMirror 5 keeps its editor object on the wrapper element: what an editor holds is read through it.
function editorValue(selector) {
  return page.locator(`${selector} .CodeMirror`).first().evaluate((element) => element.CodeMirror.getValue());
}

/** Replaces what the editor holds by typing (select all, delete, insert the text) and checks it took. */
async function typeInto(selector, text) {
  await page.locator(`${selector} .CodeMirror`).first().click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
  const value = await editorValue(selector);
  if (value !== text) await fail(`the editor ${selector} holds ${JSON.stringify(value)}, not ${JSON.stringify(text)}`);
}

/**
 * Types an operation into the query editor and waits until GraphiQL has parsed it (it does so 100 ms after the
 * last change; a run before that would go out with the previous document's kind, e.g. a subscription over HTTP).
 */
async function typeQuery(text, operation) {
  await typeInto('.graphiql-query-editor', text);
  await page.waitForFunction(
    (kind) => document.querySelector('.graphiql-query-editor .CodeMirror')?.CodeMirror?.documentAST?.definitions?.[0]?.operation === kind,
    operation,
  );
}

/** Waits until the result pane holds JSON that `accept` takes; gives that JSON. */
async function waitForResult(accept) {
  const started = Date.now();
  let last = '';
  while (Date.now() - started < STEP_MS) {
    last = await editorValue('.result-window');
    try {
      const body = JSON.parse(last);
      if (accept(body)) return body;
    } catch {
      // Empty, or still streaming.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`the result pane shows ${JSON.stringify(last.slice(0, 500))}`);
}
