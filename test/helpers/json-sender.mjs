#!/usr/bin/env node
/**
 * Sends four JSON bodies of MIB MiB at once to URL (latents as nested arrays of 8 full-precision
 * numbers, k = 1) and prints {bytes, replies} as one JSON line. Run as its own process, so that the
 * process probing /healthz meanwhile is not also the one sending (test/json-body.test.ts,
 * bench/json-bodies.mjs).
 *
 *   node test/helpers/json-sender.mjs URL MIB
 */
const [url, mib] = process.argv.slice(2);
const row = `[${Array.from({ length: 8 }, (_, i) => (-0.1234567890123456 - i / 7).toString()).join(',')}]`;
const count = Math.floor((Number(mib) * 1024 * 1024) / (row.length + 1));
const body = Buffer.from(`{"k": 1, "latents": [${Array.from({ length: count }, () => row).join(',')}]}`);
const replies = await Promise.all(
  Array.from({ length: 4 }, () =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then(async (r) => ({ status: r.status, body: await r.json() })),
  ),
);
console.log(JSON.stringify({ bytes: body.length, replies }));
