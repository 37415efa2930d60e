#!/usr/bin/env node
// Regenerates src/generated/openapi.ts from a running tally's /openapi.json (or a saved
// copy): `npm run generate -- http://localhost:3000` then `npm run build`. The document
// names the catalogue's plan and pack ids, so the types follow your own tally.toml.
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString, COMMENT_HEADER } from "openapi-typescript";

export const OUT = fileURLToPath(new URL("../src/generated/openapi.ts", import.meta.url));

/**
 * The TypeScript text openapi-typescript makes from this OpenAPI document (an object).
 * `defaultNonNullable: false`: a request field with a default (ttl_seconds) stays optional.
 */
export async function typesFor(document) {
  const ast = await openapiTS(document, { defaultNonNullable: false });
  return COMMENT_HEADER + "// Made by `npm run generate` from tally's GET /openapi.json.\n\n" + astToString(ast);
}

/** The document at a tally base URL, an /openapi.json URL or a file path. */
export async function readDocument(source) {
  if (/^https?:\/\//.test(source)) {
    const url = new URL(source);
    if (!url.pathname.endsWith("/openapi.json")) url.pathname = url.pathname.replace(/\/?$/, "/openapi.json");
    const res = await fetch(url);
    if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
    return res.json();
  }
  return JSON.parse(await readFile(source, "utf8"));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const source = process.argv[2] ?? "http://localhost:3000";
  const text = await typesFor(await readDocument(source));
  await writeFile(OUT, text);
  console.log(`wrote ${OUT} from ${source}`);
}
