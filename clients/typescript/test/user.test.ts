// The user calls (checkout, portal, billing, handoff) against a real `tally serve`
// with an HS256 user token, and a fake Stripe that records what tally asked of it.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { InvalidField, TallyError, createTally, createTallyUser, type Result } from "../src/index.js";
import { API_KEY, PRICES, newUser, startTally, type RunningTally } from "./harness.js";

let server: RunningTally;

before(async () => {
  server = await startTally();
});
after(async () => {
  await server?.stop();
});

function ok<T>(result: Result<T>): T {
  if (result.error) throw result.error;
  return result.data;
}

const asUser = (userId: string) => createTallyUser({ baseUrl: server.url, accessToken: server.token(userId) });

function lastCall(path: string) {
  const calls = server.stripe.calls.filter((c) => c.path === path);
  assert.ok(calls.length > 0, `tally did not call ${path}`);
  return calls[calls.length - 1]!;
}

describe("user calls", () => {
  test("billing is the token's user's own state", async () => {
    const user = newUser("me");
    const billing = ok(await asUser(user).billing());
    assert.equal(billing.user_id, user);
    assert.equal(billing.tier, "free");
    assert.equal(billing.credits, 100);
  });

  test("checkout of a plan returns Stripe's URL and sends the plan's price", async () => {
    const user = newUser("buyer");
    const { url } = ok(await asUser(user).checkout({ item: "pro", interval: "month" }));
    assert.match(url, /^https:\/\/checkout\.stripe\.test\/c\/pay\/cs_test_fake\d+$/);

    const customer = lastCall("/v1/customers");
    assert.equal(customer.form.get("metadata[user_id]"), user);
    assert.equal(customer.idempotencyKey, `tally-customer-${user}`);

    const session = lastCall("/v1/checkout/sessions");
    assert.equal(session.form.get("mode"), "subscription");
    assert.equal(session.form.get("line_items[0][price]"), PRICES.pro);
    assert.equal(session.form.get("line_items[0][quantity]"), "1");
    assert.equal(session.form.get("client_reference_id"), user);
    assert.equal(session.form.get("metadata[item]"), "pro");
    assert.match(session.form.get("customer") ?? "", /^cus_fake\d+$/);
    assert.equal(session.form.get("success_url"), `${server.url}/dashboard/billing?success=true&session_id={CHECKOUT_SESSION_ID}`);
    assert.equal(session.form.get("cancel_url"), `${server.url}/dashboard/billing?canceled=true`);
  });

  test("checkout of a pack is a one-time payment of its price; the customer is made once", async () => {
    const user = newUser("packer");
    const me = asUser(user);
    ok(await me.checkout({ item: "topup" }));
    const first = lastCall("/v1/checkout/sessions");
    assert.equal(first.form.get("mode"), "payment");
    assert.equal(first.form.get("line_items[0][price]"), PRICES.topup);
    assert.equal(first.form.get("payment_intent_data[metadata][user_id]"), user);

    const customers = () => server.stripe.calls.filter((c) => c.path === "/v1/customers" && c.form.get("metadata[user_id]") === user);
    assert.equal(customers().length, 1);
    ok(await me.checkout({ item: "topup" }));
    assert.equal(customers().length, 1, "the second checkout reuses the customer");
    assert.equal(lastCall("/v1/checkout/sessions").form.get("customer"), first.form.get("customer"));
  });

  test("an item not in the catalogue is InvalidField on item, and Stripe is not asked", async () => {
    const before = server.stripe.calls.filter((c) => c.path === "/v1/checkout/sessions").length;
    const refused = await asUser(newUser("typo")).checkout({ item: "platinum" });
    assert.ok(refused.error instanceof InvalidField, String(refused.error));
    assert.equal(refused.error.status, 422);
    assert.equal(refused.error.code, "unknown_item");
    assert.equal(refused.error.field, "item");
    assert.equal(server.stripe.calls.filter((c) => c.path === "/v1/checkout/sessions").length, before);
  });

  test("a pack has no yearly price: invalid_interval", async () => {
    const refused = await asUser(newUser("yearly")).checkout({ item: "topup", interval: "year" });
    assert.ok(refused.error instanceof InvalidField);
    assert.equal(refused.error.code, "invalid_interval");
    assert.equal(refused.error.field, "interval");
  });

  test("portal returns the Customer Portal URL for the user's customer", async () => {
    const user = newUser("portal");
    const { url } = ok(await asUser(user).portal());
    assert.match(url, /^https:\/\/billing\.stripe\.test\/p\/session\/bps_fake\d+$/);
    const customer = lastCall("/v1/customers");
    assert.equal(customer.form.get("metadata[user_id]"), user);
    const portal = lastCall("/v1/billing_portal/sessions");
    assert.match(portal.form.get("customer") ?? "", /^cus_fake\d+$/);
    assert.equal(portal.form.get("return_url"), `${server.url}/dashboard/billing`);
  });

  test("handoff is a one-time sign-in link to the billing page", async () => {
    const link = ok(await asUser(newUser("handoff")).handoff());
    assert.ok(link.url.startsWith(`${server.url}/dashboard/sign-in?code=`), link.url);
    assert.ok(link.expires_at > Date.now() / 1000);
    const first = await fetch(link.url, { redirect: "manual" });
    assert.equal(first.status, 303);
    const again = await fetch(link.url, { redirect: "manual" });
    assert.equal(again.status, 401, "the code works once");
  });

  test("a token signed with another secret is 401", async () => {
    const forged = server.token("mallory").replace(/\.[^.]+$/, ".c2lnbmF0dXJl");
    const refused = await createTallyUser({ baseUrl: server.url, accessToken: forged }).billing();
    assert.ok(refused.error instanceof TallyError);
    assert.equal(refused.error.status, 401);
    assert.equal(refused.error.code, "unauthorized");
  });

  test("the host app's client makes user clients with asUser, and both read the catalogue", async () => {
    const host = createTally({ baseUrl: server.url, apiKey: API_KEY });
    const user = newUser("via-host");
    assert.equal(ok(await host.asUser(server.token(user)).billing()).user_id, user);
    const catalogue = ok(await asUser(user).catalogue());
    assert.deepEqual(
      catalogue.plans.map((p) => p.prices.map((price) => price.id)),
      [[PRICES.pro], [PRICES.enterprise]],
    );
  });
});
