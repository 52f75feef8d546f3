/**
 * Two results of the same request compared as a user compares them: every figure equal to float
 * rounding (relative 1e-6), every other field equal; what describes how the work was planned and
 * timed (batch sizes the session's tuning chose, timings, whether a measurement came from a cache)
 * left out, since two servers or two moments may plan the same work differently.
 */
const PLAN = new Set(['timings', 'batches', 'batchRows', 'batchRowsFrom', 'forwardMs', 'totalMs', 'reduceMs', 'elapsedMs']);

function plain(value: unknown): unknown {
  return JSON.parse(
    JSON.stringify(value, (key, v) => (PLAN.has(key) || ((key === 'noise' || key === 'halving') && v !== null && typeof v === 'object' && 'cached' in v) ? undefined : v)),
  );
}

/** The first path where `got` and `want` differ (numbers to rel 1e-6), or null. */
export function figureDifference(got: unknown, want: unknown, path = '$'): string | null {
  const [a, b] = path === '$' ? [plain(got), plain(want)] : [got, want];
  if (typeof a === 'number' && typeof b === 'number') {
    return a === b || Math.abs(a - b) <= 1e-6 * Math.max(Math.abs(a), Math.abs(b)) ? null : `${path}: ${a} ≠ ${b}`;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${path}: ${a.length} items ≠ ${b.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = figureDifference(a[i], b[i], `${path}[${i}]`);
      if (d) return d;
    }
    return null;
  }
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) {
      const d = figureDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
      if (d) return d;
    }
    return null;
  }
  return a === b ? null : `${path}: ${JSON.stringify(a)} ≠ ${JSON.stringify(b)}`;
}
