// A typed client of tally. The types come from tally's own GET /openapi.json through
// openapi-typescript (src/generated/openapi.ts, `npm run generate`), the requests go
// through openapi-fetch; this file only names the calls, makes idempotency keys and
// turns error answers into typed values.

import createClient, { type Client } from "openapi-fetch";

import { TallyError, errorFrom } from "./errors.js";
import type { components, paths } from "./generated/openapi.js";

export { IdempotencyKeyReused, InsufficientCredits, InvalidField, ReservationClosed, TallyError } from "./errors.js";
export type { components, paths, operations } from "./generated/openapi.js";

type Schemas = components["schemas"];
export type Billing = Schemas["Billing"];
export type Subscription = Schemas["Subscription"];
export type LedgerRow = Schemas["LedgerRow"];
export type Reservation = Schemas["ReservationState"];
export type Catalogue = Schemas["Catalogue"];
export type CataloguePlan = Schemas["CataloguePlan"];
export type CataloguePack = Schemas["CataloguePack"];
export type CataloguePrice = Schemas["CataloguePrice"];
export type HandoffLink = Schemas["HandoffLink"];
/** `free` or a plan id, as the catalogue the types were generated from names them. */
export type Tier = Billing["tier"];
/** The plan and pack ids of the catalogue the types were generated from. */
export type KnownItem = Schemas["CheckoutRequest"]["item"];
/**
 * A plan or pack id: the generated catalogue's ids autocomplete, any other string is
 * accepted (ids read from GET /api/catalogue at run time are plain strings), and tally
 * answers an unknown one with `InvalidField` (`unknown_item`).
 */
export type Item = KnownItem | (string & {});
export type Interval = NonNullable<Schemas["CheckoutRequest"]["interval"]>;

/** A call's outcome: the answer's data, or tally's error answer as a typed value. */
export type Result<T> = { data: T; error?: undefined } | { data?: undefined; error: TallyError };

export interface TallyOptions {
  /** Where tally is, e.g. `http://localhost:3000`. */
  baseUrl: string;
  /** A custom fetch (tests, instrumentation); it gets a `Request`. */
  fetch?: (request: Request) => Promise<Response>;
  /**
   * How many times a call that is safe to repeat is tried again after a network failure
   * or a 503 (reads, and spends and reserves, which carry their idempotency key):
   * default 2. Commits, releases, checkout and portal are never retried.
   */
  retries?: number;
  /** The first retry's delay in ms, doubled for each next one: default 200. */
  retryDelayMs?: number;
  /** Makes an idempotency key when a call is given none: default `crypto.randomUUID()`. */
  newIdempotencyKey?: () => string;
}

export interface HostAppOptions extends TallyOptions {
  /** The host app's key, tally's `TALLY_API_KEY`. Keep it on your server. */
  apiKey: string;
}

export interface UserOptions extends TallyOptions {
  /** The signed-in user's token (e.g. Supabase's `session.access_token`). */
  accessToken: string;
}

export interface SpendInput {
  userId: string;
  amount: number;
  /** Shown in the ledger. */
  reason?: string;
  /** The same key spends once. Default: a new key, kept across this call's retries. */
  idempotencyKey?: string;
}

export interface ReserveInput {
  userId: string;
  amount: number;
  /** After this many seconds a hold that was neither committed nor released frees itself (tally's default 300). */
  ttlSeconds?: number;
  /** The same key returns the same hold. Default: a new key, kept across this call's retries. */
  idempotencyKey?: string;
}

export interface LedgerQuery {
  /** 1 to 500, tally's default 50. */
  limit?: number;
  /** A row id from an earlier page: only older rows. */
  before?: number;
}

/** What the function given to `withCredits` reports: the credits it used and its result. */
export interface Usage<T> {
  /** The actual cost: an integer from 0 to the estimate. */
  used: number;
  result: T;
}

export interface WithCreditsOptions {
  ttlSeconds?: number;
  /** The reservation's key: pass one stable for the work (a request id) to make a retried `withCredits` hold once. */
  idempotencyKey?: string;
}

export interface WithCreditsDone<T> {
  result: T;
  used: number;
  /** The committed reservation, with the user's billing state after it. */
  reservation: Reservation;
}

interface Answer {
  data?: unknown;
  error?: unknown;
  response: Response;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What both clients share: the openapi-fetch client, retries and error values. */
class Base {
  /** The underlying openapi-fetch client, typed from tally's document, for anything not wrapped here. */
  readonly raw: Client<paths>;
  protected readonly retries: number;
  protected readonly retryDelayMs: number;
  protected readonly newKey: () => string;

  constructor(options: TallyOptions, authorization: string | undefined) {
    if (!options.baseUrl) throw new TypeError("tally: baseUrl is required");
    this.raw = createClient<paths>({
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
      headers: authorization ? { authorization } : {},
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
    this.retries = options.retries ?? 2;
    this.retryDelayMs = options.retryDelayMs ?? 200;
    this.newKey = options.newIdempotencyKey ?? (() => globalThis.crypto.randomUUID());
  }

  /** Sends, retrying what is safe to repeat, and returns the data or the typed error. */
  protected async call<T>(send: () => Promise<Answer>, retry: boolean): Promise<Result<T>> {
    for (let attempt = 0; ; attempt++) {
      const again = retry && attempt < this.retries;
      let answer: Answer;
      try {
        answer = await send();
      } catch (err) {
        const aborted = err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError");
        if (!again || aborted) throw err;
        await sleep(this.retryDelayMs * 2 ** attempt);
        continue;
      }
      if (answer.response.ok) return { data: answer.data as T };
      if (again && answer.response.status === 503) {
        await sleep(this.retryDelayMs * 2 ** attempt);
        continue;
      }
      return { error: errorFrom(answer.response.status, answer.error) };
    }
  }

  /** The plans, packs and prices on offer (no auth needed), for a pricing page. */
  catalogue(): Promise<Result<Catalogue>> {
    return this.call(() => this.raw.GET("/api/catalogue"), true);
  }
}

/** The host app's calls, with `TALLY_API_KEY`: on your server only. */
export class TallyHostApp extends Base {
  private readonly options: TallyOptions;

  constructor(options: HostAppOptions) {
    if (!options.apiKey) throw new TypeError("tally: apiKey (TALLY_API_KEY) is required");
    super(options, `Bearer ${options.apiKey}`);
    this.options = options;
  }

  /** A user's billing state; a user tally has never seen is free with the free allowance. */
  billing(userId: string): Promise<Result<Billing>> {
    return this.call(() => this.raw.GET("/api/users/{id}/billing", { params: { path: { id: userId } } }), true);
  }

  /** A user's newest ledger rows (page on with `before`: the last row's id). */
  ledger(userId: string, query: LedgerQuery = {}): Promise<Result<LedgerRow[]>> {
    return this.call(
      () => this.raw.GET("/api/users/{id}/ledger", { params: { path: { id: userId }, query } }),
      true,
    );
  }

  /** Spends credits, plan bucket first. Insufficient credits are `InsufficientCredits`. */
  spend(input: SpendInput): Promise<Result<Billing>> {
    const body = {
      user_id: input.userId,
      amount: input.amount,
      idempotency_key: input.idempotencyKey ?? this.newKey(),
      ...(input.reason === undefined ? {} : { reason: input.reason }),
    };
    return this.call(() => this.raw.POST("/api/credits/spend", { body }), true);
  }

  /** Holds credits before a metered call; commit the actual cost after, or release. */
  reserve(input: ReserveInput): Promise<Result<Reservation>> {
    const body = {
      user_id: input.userId,
      amount: input.amount,
      idempotency_key: input.idempotencyKey ?? this.newKey(),
      ...(input.ttlSeconds === undefined ? {} : { ttl_seconds: input.ttlSeconds }),
    };
    return this.call(() => this.raw.POST("/api/credits/reserve", { body }), true);
  }

  /** Takes `amount` (at most what is held, 0 frees it all) and frees the rest of the hold. */
  commit(reservationId: string, amount: number): Promise<Result<Reservation>> {
    return this.call(
      () =>
        this.raw.POST("/api/credits/reservations/{id}/commit", {
          params: { path: { id: reservationId } },
          body: { amount },
        }),
      false,
    );
  }

  /** Frees a hold. */
  release(reservationId: string): Promise<Result<Reservation>> {
    return this.call(
      () => this.raw.POST("/api/credits/reservations/{id}/release", { params: { path: { id: reservationId } } }),
      false,
    );
  }

  /**
   * Reserves `estimate` credits, runs `fn`, and commits what `fn` reports it used (the
   * rest of the hold is freed). When `fn` throws, the hold is released and the error
   * rethrown. When the user cannot cover the estimate, `fn` is not run and the answer
   * is `{ error: InsufficientCredits }`. A `used` that is not an integer from 0 to the
   * estimate is a bug in `fn`: the hold is released and a RangeError thrown.
   */
  async withCredits<T>(
    userId: string,
    estimate: number,
    fn: (reservation: Reservation) => Promise<Usage<T>> | Usage<T>,
    options: WithCreditsOptions = {},
  ): Promise<Result<WithCreditsDone<T>>> {
    const held = await this.reserve({
      userId,
      amount: estimate,
      ...(options.ttlSeconds === undefined ? {} : { ttlSeconds: options.ttlSeconds }),
      ...(options.idempotencyKey === undefined ? {} : { idempotencyKey: options.idempotencyKey }),
    });
    if (held.error) return { error: held.error };
    const reservation = held.data;
    let usage: Usage<T>;
    try {
      usage = await fn(reservation);
    } catch (err) {
      await this.releaseQuietly(reservation.reservation_id);
      throw err;
    }
    const used = usage?.used;
    if (typeof used !== "number" || !Number.isInteger(used) || used < 0 || used > reservation.amount) {
      await this.releaseQuietly(reservation.reservation_id);
      throw new RangeError(`tally: withCredits: used must be an integer from 0 to ${reservation.amount}, got ${used}`);
    }
    const done = await this.commit(reservation.reservation_id, used);
    if (done.error) return { error: done.error };
    return { data: { result: usage.result, used, reservation: done.data } };
  }

  /** A release whose failure is left to the hold's ttl: the caller's error matters more. */
  private async releaseQuietly(reservationId: string): Promise<void> {
    try {
      await this.release(reservationId);
    } catch {
      // The hold frees itself after its ttl_seconds.
    }
  }

  /** The user calls made with a signed-in user's token, sharing these options. */
  asUser(accessToken: string): TallyUser {
    return new TallyUser({ ...this.options, accessToken });
  }
}

/** The calls a signed-in user makes with their own token (fine in a browser). */
export class TallyUser extends Base {
  constructor(options: UserOptions) {
    if (!options.accessToken) throw new TypeError("tally: accessToken is required");
    super(options, `Bearer ${options.accessToken}`);
  }

  /** The user's own billing state. */
  billing(): Promise<Result<Billing>> {
    return this.call(() => this.raw.GET("/api/billing"), true);
  }

  /**
   * A Stripe Checkout Session for a plan or pack: send the user to `url`. A subscriber
   * asking for a plan gets a Customer Portal URL instead.
   */
  checkout(input: { item: Item; interval?: Interval }): Promise<Result<{ url: string }>> {
    const body = { item: input.item as KnownItem, ...(input.interval ? { interval: input.interval } : {}) };
    return this.call(() => this.raw.POST("/api/checkout", { body }), false);
  }

  /** A Stripe Customer Portal session: send the user to `url`. */
  portal(): Promise<Result<{ url: string }>> {
    return this.call(() => this.raw.POST("/api/portal"), false);
  }

  /** A one-time link (60 s) that signs the user in to tally's billing page. */
  handoff(): Promise<Result<HandoffLink>> {
    return this.call(() => this.raw.POST("/api/billing/handoff"), false);
  }
}

/** The host app's client: `createTally({ baseUrl: process.env.TALLY_URL, apiKey: process.env.TALLY_API_KEY })`. */
export function createTally(options: HostAppOptions): TallyHostApp {
  return new TallyHostApp(options);
}

/** A signed-in user's client: `createTallyUser({ baseUrl, accessToken: session.access_token })`. */
export function createTallyUser(options: UserOptions): TallyUser {
  return new TallyUser(options);
}
