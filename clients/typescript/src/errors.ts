// tally's error answers as typed values: `{"error": code, "message": text}`, with the
// extra fields some codes carry. Calls return them (`{ error }`) rather than throw.

import type { components } from "./generated/openapi.js";

type ReservationStatus = components["schemas"]["ReservationClosed"]["status"];

/** Any error answer of tally: the HTTP status, tally's `error` code and `message`. */
export class TallyError extends Error {
  override name = "TallyError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** The answer's JSON body as sent. */
    readonly body: unknown,
  ) {
    super(message);
  }
}

/** 402: the user's free credits (not held by reservations) do not cover the amount. */
export class InsufficientCredits extends TallyError {
  override name = "InsufficientCredits";
  declare readonly code: "insufficient_credits";
  constructor(
    message: string,
    readonly needed: number,
    readonly available: number,
    body: unknown,
  ) {
    super(402, "insufficient_credits", message, body);
  }
}

/** 409: the idempotency key was used before for another user, amount or kind of call. */
export class IdempotencyKeyReused extends TallyError {
  override name = "IdempotencyKeyReused";
  declare readonly code: "idempotency_key_reused";
  constructor(message: string, body: unknown) {
    super(409, "idempotency_key_reused", message, body);
  }
}

/** 409: the reservation was already committed, released or expired. */
export class ReservationClosed extends TallyError {
  override name = "ReservationClosed";
  declare readonly code: "reservation_closed";
  constructor(
    message: string,
    readonly reservationStatus: ReservationStatus,
    body: unknown,
  ) {
    super(409, "reservation_closed", message, body);
  }
}

/**
 * 422: a value outside tally's limits (`invalid_field`), an item not in the catalogue
 * (`unknown_item`) or an interval it has no price for (`invalid_interval`). tally's
 * message starts with the field's name, which is `field`.
 */
export class InvalidField extends TallyError {
  override name = "InvalidField";
  constructor(
    code: string,
    message: string,
    readonly field: string,
    body: unknown,
  ) {
    super(422, code, message, body);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

/** The typed error for an answer that is not 2xx. */
export function errorFrom(status: number, body: unknown): TallyError {
  const fields = isRecord(body) ? body : {};
  const code = typeof fields.error === "string" ? fields.error : `http_${status}`;
  const message =
    typeof fields.message === "string" ? fields.message : typeof body === "string" && body ? body : `HTTP ${status}`;
  if (status === 402 && code === "insufficient_credits") {
    return new InsufficientCredits(message, Number(fields.needed), Number(fields.available), body);
  }
  if (status === 409 && code === "idempotency_key_reused") return new IdempotencyKeyReused(message, body);
  if (status === 409 && code === "reservation_closed") {
    return new ReservationClosed(message, fields.status as ReservationStatus, body);
  }
  if (status === 422) {
    const colon = message.indexOf(":");
    return new InvalidField(code, message, colon > 0 ? message.slice(0, colon) : "", body);
  }
  return new TallyError(status, code, message, body);
}
