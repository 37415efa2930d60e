// The host-app calls against a real `tally serve`: billing, spend, reserve, commit,
// release, ledger, the catalogue and withCredits, with real balances and ledger rows.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  IdempotencyKeyReused,
  InsufficientCredits,
  InvalidField,
  ReservationClosed,
  TallyError,
  createTally,
  type Result,
  type TallyHostApp,
} from "../src/index.js";
import { API_KEY, PRICES, newUser, startTally, type RunningTally } from "./harness.js";

/** The default catalogue's free allowance. */
const FREE = 100;

let server: RunningTally;
let tally: TallyHostApp;

before(async () => {
  server = await startTally();
  tally = createTally({ baseUrl: server.url, apiKey: API_KEY, retryDelayMs: 10 });
});
after(async () => {
  await server?.stop();
});

function ok<T>(result: Result<T>): T {
  if (result.error) throw result.error;
  return result.data;
}

async function credits(userId: string): Promise<number> {
  return ok(await tally.billing(userId)).credits;
}

describe("billing and spend", () => {
  test("a new user is free with the free allowance", async () => {
    const user = newUser("fresh");
    const billing = ok(await tally.billing(user));
    assert.equal(billing.user_id, user);
    assert.equal(billing.tier, "free");
    assert.equal(billing.credits, FREE);
    assert.equal(billing.reserved_credits, 0);
    assert.equal(billing.subscription, null);
  });

  test("spend takes the amount and writes a ledger row", async () => {
    const user = newUser("spender");
    const after = ok(await tally.spend({ userId: user, amount: 30, reason: "image render", idempotencyKey: "render-1" }));
    assert.equal(after.credits, FREE - 30);
    assert.equal(await credits(user), FREE - 30);
    const rows = ok(await tally.ledger(user));
    const spend = rows.find((r) => r.reference === "spend:render-1");
    assert.ok(spend, `no spend row in ${JSON.stringify(rows)}`);
    assert.equal(spend.delta, -30);
    assert.equal(spend.reason, "image render");
    assert.equal(spend.balance_after, FREE - 30);
  });

  test("the same key twice spends once; the key for another amount is idempotency_key_reused", async () => {
    const user = newUser("twice");
    const first = ok(await tally.spend({ userId: user, amount: 10, idempotencyKey: "job-7" }));
    const second = ok(await tally.spend({ userId: user, amount: 10, idempotencyKey: "job-7" }));
    assert.equal(first.credits, FREE - 10);
    assert.equal(second.credits, FREE - 10);
    assert.equal(await credits(user), FREE - 10);

    const reused = await tally.spend({ userId: user, amount: 11, idempotencyKey: "job-7" });
    assert.ok(reused.error instanceof IdempotencyKeyReused, String(reused.error));
    assert.equal(reused.error.status, 409);
    assert.equal(reused.error.code, "idempotency_key_reused");
    assert.equal(await credits(user), FREE - 10);
  });

  test("calls without a key get a new one each: two spends spend twice", async () => {
    const user = newUser("keys");
    ok(await tally.spend({ userId: user, amount: 5 }));
    ok(await tally.spend({ userId: user, amount: 5 }));
    assert.equal(await credits(user), FREE - 10);
    const refs = ok(await tally.ledger(user))
      .filter((r) => r.reference.startsWith("spend:"))
      .map((r) => r.reference);
    assert.equal(refs.length, 2);
    assert.notEqual(refs[0], refs[1]);
  });

  test("a spend whose answer is lost is retried with its generated key and spends once", async () => {
    const user = newUser("retry");
    const sent: string[] = [];
    let lose = 1;
    const flaky = createTally({
      baseUrl: server.url,
      apiKey: API_KEY,
      retryDelayMs: 10,
      // Delivers the request to tally, then loses its answer once, as a dropped connection would.
      fetch: async (request) => {
        sent.push(await request.clone().text());
        const response = await fetch(request);
        if (request.url.endsWith("/api/credits/spend") && lose-- > 0) throw new TypeError("fetch failed");
        return response;
      },
    });
    const answer = ok(await flaky.spend({ userId: user, amount: 25 }));
    assert.equal(sent.length, 2, "the spend was sent twice");
    assert.equal(sent[0], sent[1], "with the same body, key included");
    assert.equal(answer.credits, FREE - 25);
    assert.equal(await credits(user), FREE - 25);
    assert.equal(ok(await tally.ledger(user)).filter((r) => r.reference.startsWith("spend:")).length, 1);
  });

  test("a network failure past the retries is thrown", async () => {
    const down = createTally({
      baseUrl: server.url,
      apiKey: API_KEY,
      retries: 1,
      retryDelayMs: 1,
      fetch: async () => {
        throw new TypeError("fetch failed");
      },
    });
    await assert.rejects(down.billing("anyone"), TypeError);
  });

  test("insufficient_credits is a typed value with needed and available", async () => {
    const user = newUser("poor");
    ok(await tally.spend({ userId: user, amount: 40 }));
    const refused = await tally.spend({ userId: user, amount: 1000 });
    assert.equal(refused.data, undefined);
    assert.ok(refused.error instanceof InsufficientCredits, String(refused.error));
    assert.equal(refused.error.status, 402);
    assert.equal(refused.error.code, "insufficient_credits");
    assert.equal(refused.error.needed, 1000);
    assert.equal(refused.error.available, FREE - 40);
    assert.equal(await credits(user), FREE - 40);
  });

  test("a value outside the limits is InvalidField naming the field", async () => {
    const refused = await tally.spend({ userId: newUser("zero"), amount: 0 });
    assert.ok(refused.error instanceof InvalidField, String(refused.error));
    assert.equal(refused.error.status, 422);
    assert.equal(refused.error.code, "invalid_field");
    assert.equal(refused.error.field, "amount");

    const badId = await tally.billing("x".repeat(300));
    assert.ok(badId.error instanceof InvalidField, String(badId.error));
    assert.equal(badId.error.field, "id");
  });

  test("a wrong API key is 401 unauthorized", async () => {
    const stranger = createTally({ baseUrl: server.url, apiKey: "not-the-key" });
    const refused = await stranger.billing("anyone");
    assert.ok(refused.error instanceof TallyError);
    assert.equal(refused.error.status, 401);
    assert.equal(refused.error.code, "unauthorized");
  });
});

describe("reserve, commit and release", () => {
  test("a hold is reserved, the same key returns it, and commit takes the actual cost", async () => {
    const user = newUser("meter");
    const hold = ok(await tally.reserve({ userId: user, amount: 50, ttlSeconds: 120, idempotencyKey: "chat-1" }));
    assert.equal(hold.status, "held");
    assert.equal(hold.amount, 50);
    assert.equal(hold.user_id, user);
    assert.equal(hold.billing.reserved_credits, 50);
    assert.ok(hold.expires_at > Date.now() / 1000);

    const again = ok(await tally.reserve({ userId: user, amount: 50, ttlSeconds: 120, idempotencyKey: "chat-1" }));
    assert.equal(again.reservation_id, hold.reservation_id);
    assert.equal(ok(await tally.billing(user)).reserved_credits, 50);

    const spendingTheHold = await tally.spend({ userId: user, amount: 1, idempotencyKey: "chat-1" });
    assert.ok(spendingTheHold.error instanceof IdempotencyKeyReused, "a hold's key is not a spend's");

    const done = ok(await tally.commit(hold.reservation_id, 17));
    assert.equal(done.status, "committed");
    assert.equal(done.committed, 17);
    assert.equal(done.billing.credits, FREE - 17);
    assert.equal(done.billing.reserved_credits, 0);

    const closed = await tally.commit(hold.reservation_id, 1);
    assert.ok(closed.error instanceof ReservationClosed, String(closed.error));
    assert.equal(closed.error.reservationStatus, "committed");
    assert.equal(await credits(user), FREE - 17);
    const refs = ok(await tally.ledger(user)).map((r) => r.reference);
    assert.ok(refs.some((r) => r.startsWith("commit:")), JSON.stringify(refs));
  });

  test("release frees a hold", async () => {
    const user = newUser("release");
    const hold = ok(await tally.reserve({ userId: user, amount: 60 }));
    assert.equal(ok(await tally.billing(user)).reserved_credits, 60);
    const held = await tally.spend({ userId: user, amount: 50 });
    assert.ok(held.error instanceof InsufficientCredits, "held credits cannot be spent");
    assert.equal(held.error.available, FREE - 60);

    const released = ok(await tally.release(hold.reservation_id));
    assert.equal(released.status, "released");
    assert.equal(released.billing.reserved_credits, 0);
    assert.equal(released.billing.credits, FREE);

    const twice = await tally.release(hold.reservation_id);
    assert.ok(twice.error instanceof ReservationClosed);
    assert.equal(twice.error.reservationStatus, "released");
  });

  test("a hold past the free credits is insufficient_credits", async () => {
    const refused = await tally.reserve({ userId: newUser("big"), amount: FREE + 1 });
    assert.ok(refused.error instanceof InsufficientCredits);
    assert.equal(refused.error.needed, FREE + 1);
    assert.equal(refused.error.available, FREE);
  });

  test("an unknown reservation is 404 not_found", async () => {
    const missing = await tally.commit("res_nope", 1);
    assert.ok(missing.error instanceof TallyError);
    assert.equal(missing.error.status, 404);
    assert.equal(missing.error.code, "not_found");
  });
});

describe("withCredits", () => {
  test("commits what fn reports it used, not the estimate", async () => {
    const user = newUser("with");
    const done = await tally.withCredits(user, 40, async (hold) => {
      assert.equal(hold.amount, 40);
      assert.equal(ok(await tally.billing(user)).reserved_credits, 40, "the estimate is held while fn runs");
      return { used: 12, result: "an answer" };
    });
    const { result, used, reservation } = ok(done);
    assert.equal(result, "an answer");
    assert.equal(used, 12);
    assert.equal(reservation.status, "committed");
    assert.equal(reservation.committed, 12);
    const billing = ok(await tally.billing(user));
    assert.equal(billing.credits, FREE - 12);
    assert.equal(billing.reserved_credits, 0);
  });

  test("releases the hold when fn throws and rethrows the error", async () => {
    const user = newUser("throws");
    const failure = new Error("the model failed");
    let hold: string | undefined;
    await assert.rejects(
      tally.withCredits(user, 40, async (reservation) => {
        hold = reservation.reservation_id;
        throw failure;
      }),
      (err) => err === failure,
    );
    const billing = ok(await tally.billing(user));
    assert.equal(billing.credits, FREE);
    assert.equal(billing.reserved_credits, 0);
    const closed = await tally.commit(hold!, 1);
    assert.ok(closed.error instanceof ReservationClosed);
    assert.equal(closed.error.reservationStatus, "released");
  });

  test("an estimate past the free credits is refused and fn is not run", async () => {
    const user = newUser("estimate");
    ok(await tally.spend({ userId: user, amount: 70 }));
    let ran = false;
    const refused = await tally.withCredits(user, 50, () => {
      ran = true;
      return { used: 1, result: null };
    });
    assert.equal(ran, false);
    assert.ok(refused.error instanceof InsufficientCredits);
    assert.equal(refused.error.needed, 50);
    assert.equal(refused.error.available, FREE - 70);
    assert.equal(await credits(user), FREE - 70);
  });

  test("a used past the estimate is a RangeError and the hold is released", async () => {
    const user = newUser("overused");
    await assert.rejects(tally.withCredits(user, 10, () => ({ used: 11, result: 0 })), RangeError);
    const billing = ok(await tally.billing(user));
    assert.equal(billing.credits, FREE);
    assert.equal(billing.reserved_credits, 0);
  });

  test("the same idempotency key holds once across retried work", async () => {
    const user = newUser("rekey");
    ok(await tally.withCredits(user, 30, () => ({ used: 30, result: 1 }), { idempotencyKey: "req-9" }));
    const again = await tally.withCredits(user, 30, () => ({ used: 30, result: 2 }), { idempotencyKey: "req-9" });
    assert.ok(again.error instanceof ReservationClosed, "the hold of req-9 is committed already");
    assert.equal(await credits(user), FREE - 30);
  });
});

describe("ledger and catalogue", () => {
  test("a bought top-up appears in the ledger, newest first, paged with before", async () => {
    const user = newUser("topup");
    ok(await tally.spend({ userId: user, amount: 10, idempotencyKey: `${user}-a` }));
    await server.cli("trigger", "checkout.session.completed", "--user", user, "--item", "topup");
    const billing = ok(await tally.billing(user));
    assert.equal(billing.topup_credits, 1000);
    assert.equal(billing.credits, FREE - 10 + 1000);

    const rows = ok(await tally.ledger(user));
    const newest = rows[0]!;
    assert.equal(newest.bucket, "topup");
    assert.equal(newest.delta, 1000);
    assert.ok(newest.reference.startsWith("topup:"), newest.reference);

    const first = ok(await tally.ledger(user, { limit: 1 }));
    assert.equal(first.length, 1);
    assert.equal(first[0]!.id, newest.id);
    const next = ok(await tally.ledger(user, { limit: 1, before: newest.id }));
    assert.equal(next[0]!.id, rows[1]!.id);
  });

  test("the catalogue lists the default plans and the top-up with their prices", async () => {
    const catalogue = ok(await tally.catalogue());
    assert.deepEqual(
      catalogue.plans.map((p) => p.id),
      ["pro", "enterprise"],
    );
    assert.deepEqual(
      catalogue.packs.map((p) => p.id),
      ["topup"],
    );
    const topup = catalogue.packs[0]!;
    assert.equal(topup.credits, 1000);
    assert.equal(topup.prices[0]!.id, PRICES.topup);
    assert.equal(topup.prices[0]!.interval, null);
    assert.equal(catalogue.free.credits, FREE);
  });
});
