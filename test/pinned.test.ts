/**
 * Behaviour pinned across the metric registry (issue 12): every metric, on the example models,
 * gives the same results for the same seed as the engine before the registry did, field for field
 * apart from timings (test/fixtures/pinned/: cases.json, and results.json as written at commit
 * 572442b by generate.mjs; the Hessian's fields rewritten by update-hessian.mjs when issue 13 moved it to
 * d² + d + 1 rows). Requests go through the same parser as the HTTP routes. Fields added to
 * a result since are allowed; a pinned field that changes value, or disappears, fails.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { AuditRequestSchema, DEFAULT_LIMITS, parseRequest } from '../dist/contract/request.js';
import { gateSpec, parseGateConfig } from '../dist/gate/config.js';
import { auditFigures, inProcessMetrics, neededFigures } from '../dist/gate/figures.js';
import { inProcess, runGate } from '../dist/gate/gate.js';
import { evaluateMetric } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { SessionCache } from '../dist/runtime/session.js';

const fixture = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/pinned/${name}`, import.meta.url), 'utf8'));
const cases = fixture('cases.json') as { name: string; metric: string; [key: string]: unknown }[];
const pinned = fixture('results.json') as Record<string, unknown>;
const model = (name: string) => loadModel(new Uint8Array(readFileSync(new URL(`../models/${name}`, import.meta.url))));
const sessions = new SessionCache(8);
t.teardown(() => sessions.clear());
const context = { device: { kind: 'cpu' as const }, sessions, limits: DEFAULT_LIMITS };

/** The result as JSON, without timings (and previews, which JSON never carries). */
const comparable = (value: unknown): unknown => JSON.parse(JSON.stringify(value, (k, v) => (k === 'timings' || k === 'previews' ? undefined : v)));

for (const c of cases) {
  t.test(`${c.name}: the same result as before the registry`, async (t) => {
    let result: unknown;
    if (c.metric === 'gate') {
      const spec = gateSpec([parseGateConfig(c.config, 'case')]);
      const needed = neededFigures(spec.rules, spec.total, ...Object.values(spec.layers));
      result = await runGate(model(c.candidate as string), model(c.baseline as string), spec, {
        evaluate: inProcess(context),
        ...(needed.size ? { figures: auditFigures(inProcessMetrics(context), needed) } : {}),
      });
    } else {
      const request = parseRequest(c.request, {}, AuditRequestSchema);
      result = await evaluateMetric(c.metric as 'penalty', model(c.model as string), request, context);
    }
    // Every pinned field has its pinned value (fields added since are allowed; none may change).
    t.has(comparable(result), pinned[c.name]);
  });
}
