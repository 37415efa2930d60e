// tally's host-app client, with TALLY_API_KEY: import this from server code only
// (server actions, route handlers, Server Components), never from a client component.
import { createTally } from "tally-client";

export function tallyUrl(): string {
  return process.env.TALLY_URL ?? "http://localhost:3000";
}

export function tally() {
  const apiKey = process.env.TALLY_API_KEY;
  if (!apiKey) throw new Error("TALLY_API_KEY is not set (see .env.example)");
  return createTally({ baseUrl: tallyUrl(), apiKey });
}
