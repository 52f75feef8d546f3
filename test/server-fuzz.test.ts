/**
 * A seeded, bounded, structure-aware fuzz of the JSON routes (penalty, hessian, activeness,
 * orthogonality, audit, gate; issue 11, Definition of done). Each request starts from a valid
 * body and gets one to three mutations: a value swapped for another type, a number at the edges
 * of float64, a size far too large or too small, deep nesting, a key removed or added, the body
 * cut short or sent with the wrong content type. No answer may be a 5xx other than 503 with
 * Retry-After; the server answers /healthz and gives the same numbers afterwards. The limits are
 * small so every mutant that passes validation is cheap to run.
 */
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const SEED = 20261201;
const PER_ROUTE = 150;

/** mulberry32: small, seedable, good enough to pick mutations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const EDGE_NUMBERS = [0, -0, 1, -1, 0.5, 2, 1e-300, 1e300, 5e-324, -5e-324, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 31, -(2 ** 31), 2 ** 32, 1e-12, 1e6, 1.5, 4096, 1e9];

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function weird(random: () => number, depth = 0): Json {
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)];
  switch (Math.floor(random() * 10)) {
    case 0:
    case 1:
      return pick(EDGE_NUMBERS);
    case 9:
      // Plausible values, so mutants also get past validation and run.
      return pick([2, 3, 4, 8, 0.1, 0.01, 1e-3, 7, 9]);
    case 2:
      return pick(['', 'x', 'max', 'mean', 'unbiased', 'z', 'out', '__proto__', 'constructor', '💥', 'a'.repeat(10_000), '0x10', '1e400']);
    case 3:
      return pick([true, false, null]);
    case 4: {
      // A matrix of a random shape, of edge numbers or zeros.
      const rows = pick([0, 1, 2, 3, 9]);
      const cols = pick([0, 1, 7, 8, 9]);
      return Array.from({ length: rows }, () => Array.from({ length: cols }, () => (random() < 0.2 ? pick(EDGE_NUMBERS) : random() - 0.5)));
    }
    case 5: {
      let v: Json = random();
      for (let i = 0, n = pick([2, 3, 33, 200]); i < n; i++) v = [v];
      return v;
    }
    case 6:
      return pick([[], [1], Array.from({ length: 5000 }, () => 0.1), ['a', 1], [null], [[1, 2], [3]]]);
    case 7:
      return depth < 2 ? { samples: weird(random, depth + 1), seed: weird(random, depth + 1), x: weird(random, depth + 1) } : {};
    default:
      return pick([{}, { a: 1 }, { samples: 2 }, { samples: 1e9 }, { samples: -1 }]);
  }
}

/** Paths to every value of a JSON object, so a mutation can land anywhere in it. */
function paths(value: Json, prefix: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = [prefix];
  if (Array.isArray(value)) value.slice(0, 3).forEach((v, i) => out.push(...paths(v, [...prefix, i])));
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...prefix, k]));
  return out;
}

function mutate(body: Json, random: () => number): Json {
  const copy = structuredClone(body) as { [key: string]: Json };
  const all = paths(copy).filter((p) => p.length > 0);
  const path = all[Math.floor(random() * all.length)];
  const parent = path.slice(0, -1).reduce<Json>((node, key) => (node as Record<string, Json>)[key as string], copy) as Record<string | number, Json>;
  const key = path[path.length - 1];
  const r = random();
  if (r < 0.15 && !Array.isArray(parent)) delete parent[key];
  else if (r < 0.2) copy[['extra', 'k', 'epsilon', 'layers', 'latents', 'directions', 'epsilons', 'samples'][Math.floor(random() * 8)]] = weird(random);
  else parent[key] = weird(random);
  return copy;
}

t.test('fuzzed JSON bodies on every JSON route: no 5xx but a 503 with Retry-After, the server stays right', async (t) => {
  const { app } = await startApp(t, {
    maxBodyBytes: 1024 * 1024,
    maxQueue: 8,
    limits: { maxSamples: 8, maxK: 6, maxRows: 600, memoryBudget: 64 * 1024 * 1024 },
  });
  const mlp = modelBytes('mlp.onnx');
  const other = modelBytes('linear_orthogonal.onnx');
  for (const bytes of [mlp, other]) {
    const form = multipart([{ name: 'model', data: bytes, filename: 'm.onnx' }]);
    t.equal((await app.inject({ method: 'POST', url: '/v1/models', ...form })).statusCode, 201);
  }
  const id = sha256(mlp);
  const penalty: Json = { latents: { samples: 2, seed: 1 }, k: 2, epsilon: 0.1, seed: 3, layers: ['out'], reduction: 'max', variance: 'unbiased', epsilons: [0.05], maxSamples: 2 };
  const explicit: Json = { latents: [[0.1, -0.2, 0.3, 0, 0.5, -0.1, 0.2, 0.4], [0, 0, 0, 0, 0, 0, 0, 1]], k: 2, seed: 5, directions: [[[1, -1, 1, -1, 1, -1, 1, -1], [1, 1, 1, 1, -1, -1, -1, -1]], [[1, 1, -1, -1, 1, 1, -1, -1], [-1, 1, -1, 1, -1, 1, -1, 1]]] };
  const audit: Json = { latents: { samples: 2, seed: 1 }, k: 2, seed: 3, layers: ['out'], extent: 2, threshold: 1e-6, element: 0, modelName: 'fuzz' };
  const gate: Json = { candidate: id, baseline: id, resamples: 100, confidence: 0.9, rules: { maxIncrease: 0.1 }, penalty: { samples: 2, k: 2, seed: 1, epsilon: 0.1 } };
  const routes: { url: string; bodies: Json[] }[] = [
    { url: `/v1/models/${id}/penalty`, bodies: [penalty, explicit] },
    { url: `/v1/models/${id}/hessian`, bodies: [audit, { ...(explicit as object), layers: ['out'] }] },
    { url: `/v1/models/${id}/activeness`, bodies: [audit] },
    { url: `/v1/models/${id}/orthogonality`, bodies: [audit, explicit] },
    { url: `/v1/models/${id}/audit`, bodies: [audit] },
    { url: '/v1/gate', bodies: [gate] },
  ];
  const baseline = await app.inject({ method: 'POST', url: routes[0].url, payload: penalty as object });
  t.equal(baseline.statusCode, 200, 'the unmutated request works');
  for (const route of routes) {
    for (const body of route.bodies) t.equal((await app.inject({ method: 'POST', url: route.url, payload: body as object })).statusCode, 200, `${route.url}: its seed body is valid`);
  }

  const random = rng(SEED);
  const byStatus: Record<string, number> = {};
  for (const route of routes) {
    for (let i = 0; i < PER_ROUTE; i++) {
      let body = route.bodies[i % route.bodies.length];
      for (let m = 0, n = 1 + Math.floor(random() * 3); m < n; m++) body = mutate(body, random);
      let payload = JSON.stringify(body);
      let contentType = 'application/json';
      const raw = random();
      if (raw < 0.05) payload = payload.slice(0, Math.floor(payload.length * random()));
      else if (raw < 0.08) contentType = 'text/plain';
      else if (raw < 0.1) payload = JSON.stringify([body]);
      const r = await app.inject({ method: 'POST', url: route.url, headers: { 'content-type': contentType }, payload });
      const key = `${r.statusCode} ${r.statusCode === 200 ? '' : (r.json().error?.code ?? '?')}`.trim();
      byStatus[key] = (byStatus[key] ?? 0) + 1;
      const allowed = r.statusCode < 500 || (r.statusCode === 503 && r.headers['retry-after'] !== undefined);
      if (!allowed) t.fail(`${route.url} → ${r.statusCode} ${r.body.slice(0, 300)}; body: ${payload.slice(0, 400)}`);
      if (r.statusCode >= 400) t.ok(r.json().error?.code, 'every refusal has a code');
    }
  }
  t.comment(JSON.stringify(byStatus));
  t.ok(Object.keys(byStatus).length > 5, 'the mutations reach many different outcomes');
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  const after = await app.inject({ method: 'POST', url: routes[0].url, payload: penalty as object });
  t.equal(after.statusCode, 200);
  t.same(after.json().layers, baseline.json().layers, 'the same numbers as before the fuzz');
});
