// A minimal webhook endpoint around @supabase/stripe-sync-engine, so tally-bench can
// drive the tool users would otherwise pick with the same signed events it sends tally.
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/db STRIPE_WEBHOOK_SECRET=whsec_... \
//   [SCHEMA=stripe] [PORT=0] [POOL_MAX=16] [CHECKOUT_LINE_ITEMS=skip|fetch] node server.mjs
//
// Prints `listening on 127.0.0.1:<port>` once the migrations ran and it accepts requests.
// Signatures are checked with stripe's default 300 s tolerance (processWebhook takes no
// other), so deliveries must be signed less than 5 minutes before they arrive.
import http from 'node:http';
import { createRequire } from 'node:module';

// The package's ESM build resolves its migrations with `__dirname`, which does not exist
// in ESM; runMigrations then swallows the ReferenceError and creates no tables. The CJS
// build has a real __dirname, so load that (and the same `stripe` it uses).
const require = createRequire(import.meta.url);
const { StripeSync, runMigrations } = require('@supabase/stripe-sync-engine');
const Stripe = require('stripe');

const env = process.env;
const databaseUrl = env.DATABASE_URL;
const webhookSecret = env.STRIPE_WEBHOOK_SECRET;
const schema = env.SCHEMA || 'stripe';
const port = Number(env.PORT || 0);
const poolMax = Number(env.POOL_MAX || 16);
const checkoutLineItems = env.CHECKOUT_LINE_ITEMS || 'skip';
const MAX_BODY = 1 << 20;

function fail(message) {
  console.error(`stripe-sync-engine server: ${message}`);
  process.exit(1);
}
if (!databaseUrl) fail('DATABASE_URL is required');
if (!webhookSecret) fail('STRIPE_WEBHOOK_SECRET is required');
// The migrations hard-code "stripe"."<table>" (and look enum types up by unschema'd
// name), while queries go to "<SCHEMA>"."<table>": any other schema gets no tables.
// Isolate runs by database instead.
if (schema !== 'stripe') fail(`SCHEMA must be "stripe" (the package's migrations only create that one), got "${schema}"`);
if (!['skip', 'fetch'].includes(checkoutLineItems)) fail('CHECKOUT_LINE_ITEMS must be skip or fetch');

// runMigrations logs its errors to the logger and returns normally, so a failed
// migration is only visible here.
let migrationError = null;
await runMigrations({
  databaseUrl,
  schema,
  logger: { info() {}, warn() {}, debug() {}, error: (err) => { migrationError = err; } },
});
if (migrationError) fail(`migrations failed: ${migrationError.stack || migrationError}`);

const sync = new StripeSync({
  poolConfig: { connectionString: databaseUrl, max: poolMax },
  schema,
  stripeSecretKey: 'sk_test_bench',
  stripeWebhookSecret: webhookSecret,
  // Trust the webhook payload: never re-fetch an object from Stripe...
  revalidateObjectsViaStripeApi: [],
  // ...nor fetch the customer / subscription / invoice an object points to when it is
  // not in the database yet...
  backfillRelatedEntities: false,
  // ...nor page through lists (invoice lines, subscription items) past Stripe's first 10.
  autoExpandLists: false,
});

// Belt and braces: a Stripe client whose every API request fails at once, locally, so
// nothing this package still tries can reach Stripe (or wait 80 s on a dead network).
// Webhook signature checks do not use the HTTP client.
sync.stripe = new Stripe('sk_test_bench', {
  maxNetworkRetries: 0,
  httpClient: Stripe.createFetchHttpClient(async (url) => {
    throw new Error(`offline: stripe-sync-engine tried to call the Stripe API (${url})`);
  }),
});

// checkout.session.* events always list the session's line items from the Stripe API
// after storing the session (no option turns that off). Offline that call can only fail,
// so by default skip it: the session row is stored, checkout_session_line_items is not.
// CHECKOUT_LINE_ITEMS=fetch keeps the package's behaviour (the delivery then answers 400).
if (checkoutLineItems === 'skip') sync.fillCheckoutSessionsLineItems = async () => {};

function answer(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

// Buffers the raw body (signature verification needs the exact bytes); null past MAX_BODY.
function readBody(req) {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length'] || 0) > MAX_BODY) return resolve(null);
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        req.removeAllListeners('data');
        req.resume();
        resolve(null);
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const server = http.createServer(async (req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/health') return answer(res, 200, { ok: true });
  // /api/webhooks/stripe is tally's path, accepted too so one client can target either.
  if (req.method !== 'POST' || (path !== '/webhooks' && path !== '/api/webhooks/stripe')) {
    return answer(res, 404, { error: 'not found' });
  }
  let body;
  try {
    body = await readBody(req);
  } catch (err) {
    return answer(res, 400, { error: String(err.message || err) });
  }
  // Close the connection: the rest of an oversized body is not worth reading.
  if (body === null) return answer(res, 413, { error: 'body over 1 MiB' }, { connection: 'close' });
  try {
    await sync.processWebhook(body, req.headers['stripe-signature']);
    answer(res, 200, { received: true });
  } catch (err) {
    // Bad signature, an event type the package does not handle ("Unhandled webhook
    // event"), a shape Postgres rejects, or the offline Stripe client: all 400, as the
    // package's own examples do, so a sender sees the message.
    answer(res, 400, { error: String(err.message || err) });
  }
});
server.keepAliveTimeout = 65_000;

server.listen(port, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});

async function shutdown() {
  server.close();
  server.closeAllConnections();
  await sync.close().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
