// The committed types are what openapi-typescript makes from the running server's
// /openapi.json (the default catalogue), so they cannot drift from tally.

import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { PACKAGE_DIR, startTally, type RunningTally } from "./harness.js";

interface Generator {
  typesFor(document: unknown): Promise<string>;
  readDocument(source: string): Promise<unknown>;
}

let server: RunningTally;

before(async () => {
  server = await startTally();
});
after(async () => {
  await server?.stop();
});

test("src/generated/openapi.ts is what `npm run generate` makes from the server's /openapi.json", async () => {
  const generator = (await import(join(PACKAGE_DIR, "scripts", "generate.mjs"))) as Generator;
  const document = (await generator.readDocument(server.url)) as {
    components: { schemas: Record<string, { properties: Record<string, { enum?: unknown[] }> }> };
  };
  // The document names the default catalogue's ids, which the shipped types carry.
  assert.deepEqual(document.components.schemas.CheckoutRequest?.properties.item?.enum, ["pro", "enterprise", "topup"]);
  const fresh = await generator.typesFor(document);
  const committed = await readFile(join(PACKAGE_DIR, "src", "generated", "openapi.ts"), "utf8");
  assert.ok(
    committed === fresh,
    "src/generated/openapi.ts differs from the server's /openapi.json: run `npm run generate -- <tally url>`",
  );
});
