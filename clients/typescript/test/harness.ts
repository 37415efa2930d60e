// Starts a real `tally serve` from the built binary (TALLY_BIN, default
// ../../target/debug/tally from this package) on a free port, with its own temp
// folder and SQLite database, and a fake Stripe API beside it in this process.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** This package's folder (the tests run from dist/test/). */
export const PACKAGE_DIR = fileURLToPath(new URL("../../", import.meta.url));

export const TALLY_BIN = process.env.TALLY_BIN
  ? resolve(process.env.TALLY_BIN)
  : resolve(PACKAGE_DIR, "../../target/debug/tally");

/** What the fake Stripe was asked: the path and the form tally sent. */
export interface StripeCall {
  method: string;
  path: string;
  form: URLSearchParams;
  idempotencyKey: string | undefined;
}

export interface FakeStripe {
  url: string;
  calls: StripeCall[];
  close(): Promise<void>;
}

/** Answers the three Stripe endpoints tally calls for checkout and the portal. */
export async function startFakeStripe(): Promise<FakeStripe> {
  const calls: StripeCall[] = [];
  let n = 0;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => {
      const path = (req.url ?? "").split("?")[0] ?? "";
      const key = req.headers["idempotency-key"];
      calls.push({
        method: req.method ?? "",
        path,
        form: new URLSearchParams(body),
        idempotencyKey: typeof key === "string" ? key : undefined,
      });
      const send = (status: number, value: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(value));
      };
      if (req.headers.authorization !== "Bearer sk_test_tally_client") {
        return send(401, { error: { type: "invalid_request_error", message: "bad key" } });
      }
      n += 1;
      if (req.method === "POST" && path === "/v1/customers") return send(200, { id: `cus_fake${n}`, object: "customer" });
      if (req.method === "POST" && path === "/v1/checkout/sessions") {
        const id = `cs_test_fake${n}`;
        return send(200, { id, object: "checkout.session", url: `https://checkout.stripe.test/c/pay/${id}` });
      }
      if (req.method === "POST" && path === "/v1/billing_portal/sessions") {
        const id = `bps_fake${n}`;
        return send(200, { id, object: "billing_portal.session", url: `https://billing.stripe.test/p/session/${id}` });
      }
      send(404, { error: { type: "invalid_request_error", message: `no route ${req.method} ${path}` } });
    });
  });
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    calls,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

export const API_KEY = "tally-client-test-key";
export const JWT_SECRET = "tally-client-test-secret-of-at-least-32-bytes";
export const PRICES = { pro: "price_test_pro", enterprise: "price_test_enterprise", topup: "price_test_topup" };

export interface RunningTally {
  url: string;
  stripe: FakeStripe;
  /** An HS256 user token as Supabase makes them: `sub`, `exp`, `aud: "authenticated"`. */
  token(userId: string, extra?: Record<string, unknown>): string;
  /** Runs `tally ARGS...` with the server's configuration (e.g. `trigger`, `credits grant`). */
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A fresh tally on a free port; `stop()` kills it and removes its folder. */
export async function startTally(): Promise<RunningTally> {
  if (!existsSync(TALLY_BIN)) {
    throw new Error(`no tally binary at ${TALLY_BIN}: run \`cargo build -p tally\` or set TALLY_BIN`);
  }
  const dir = await mkdtemp(join(tmpdir(), "tally-client-"));
  const stripe = await startFakeStripe();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? dir,
    RUST_LOG: "warn",
    DATABASE_URL: `sqlite://${join(dir, "tally.db")}`,
    TALLY_BIND: `127.0.0.1:${port}`,
    TALLY_PUBLIC_URL: url,
    TALLY_API_KEY: API_KEY,
    AUTH_JWT_SECRET: JWT_SECRET,
    STRIPE_WEBHOOK_SECRET: "whsec_tally_client_test",
    STRIPE_SECRET_KEY: "sk_test_tally_client",
    STRIPE_API_BASE: stripe.url,
    STRIPE_PRO_PRICE_ID: PRICES.pro,
    STRIPE_ENTERPRISE_PRICE_ID: PRICES.enterprise,
    STRIPE_TOPUP_PRICE_ID: PRICES.topup,
  };
  const child = spawn(TALLY_BIN, ["serve"], { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let output = "";
  child.stdout?.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (output += d.toString()));
  let exited: number | null | undefined;
  const exit = new Promise<void>((ok) =>
    child.on("exit", (code) => {
      exited = code;
      running.delete(child);
      ok();
    }),
  );

  const stop = async () => {
    if (exited === undefined) {
      child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exit;
      clearTimeout(killer);
    }
    await stripe.close();
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited !== undefined) {
      await stop();
      throw new Error(`tally serve exited with ${exited}:\n${output}`);
    }
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`tally serve did not answer /healthz within 30 s:\n${output}`);
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }

  const run = promisify(execFile);
  return {
    url,
    stripe,
    token: (userId, extra = {}) => hs256({ sub: userId, aud: "authenticated", exp: now() + 600, ...extra }),
    cli: async (...args) => (await run(TALLY_BIN, args, { cwd: dir, env })).stdout,
    stop,
  };
}

const now = () => Math.floor(Date.now() / 1000);

function hs256(claims: Record<string, unknown>): string {
  const part = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${unsigned}.${createHmac("sha256", JWT_SECRET).update(unsigned).digest("base64url")}`;
}

/** A user id no other test uses. */
export function newUser(name: string): string {
  return `${name}-${Math.random().toString(36).slice(2, 10)}`;
}
