/**
 * Group specs (src/penalty/groups.ts): every form, every validation error, and the grouped
 * directions against the seeded directions and the basis machinery they must agree with.
 */
import t from 'tap';
import { AuditError } from '../dist/contract/errors.js';
import {
  directionsAlongBasis,
  expandGroupSigns,
  groupBasis,
  groupedDirections,
  rademacherDirections,
  resolveGroups,
} from '../dist/math/index.js';

const assignment = (spec: Parameters<typeof resolveGroups>[0], shape: number[]) => Array.from(resolveGroups(spec, shape).assignment);

t.test('the spec forms assign every coordinate to one group', async (t) => {
  t.same(assignment('rows', [3, 2]), [0, 0, 1, 1, 2, 2], 'W+: one group per style row');
  t.same(assignment('rows', [2, 2, 2]), [0, 0, 0, 0, 1, 1, 1, 1], 'first per-sample axis');
  t.same(assignment('blocks:2', [6]), [0, 0, 1, 1, 2, 2]);
  t.same(assignment('0-1,2-3,4-5', [6]), [0, 0, 1, 1, 2, 2]);
  t.same(assignment(' 0+5, 1-4 ', [6]), [0, 1, 1, 1, 1, 0], '+ joins coordinates and ranges; spaces ignored');
  t.same(assignment([[0, 5], [1, 2, 3, 4]], [6]), [0, 1, 1, 1, 1, 0], 'HTTP lists');
  t.same(assignment({ labels: [1, 1, 0, 0, 2, 2] }, [6]), [1, 1, 0, 0, 2, 2], 'HTTP labels');
  const rows = resolveGroups('rows', [11, 32]);
  t.equal(rows.count, 11);
  t.equal(rows.size, 352);
  t.equal(rows.description, 'rows');
  t.equal(resolveGroups('0-1,2-3', [4]).description, '2 groups');
  t.equal(resolveGroups({ labels: [0, 1, 1] }, [3]).count, 2);
});

t.test('every invalid spec is refused with its own message', async (t) => {
  const cases: [Parameters<typeof resolveGroups>[0], number[], string, number, RegExp][] = [
    ['0-3,4-8', [8], 'invalid_groups', 422, /group 1 names coordinate 8, outside the wrt tensor's 8 coordinates \(0 to 7\)/],
    [[[0, 1], [2, -1]], [3], 'invalid_groups', 422, /group 1 names coordinate -1, outside/],
    ['0-4,3-7', [8], 'invalid_groups', 422, /coordinate 3 is in group 0 and in group 1; each coordinate belongs to one group/],
    ['0-3,5-7', [8], 'invalid_groups', 422, /1 coordinates of the wrt tensor are in no group \(4\); every coordinate must be in one group/],
    ['0,1', [12], 'invalid_groups', 422, /10 coordinates of the wrt tensor are in no group \(2, 3, 4, 5, 6, 7, 8, 9, …\)/],
    ['0-3,,4-7', [8], 'invalid_groups', 422, /group 1 of the groups spec is empty/],
    ['0-3,7-4', [8], 'invalid_groups', 422, /group 1: the range 7-4 is empty \(it runs backwards\)/],
    [[[0, 1, 2, 3], []], [4], 'invalid_groups', 422, /group 1 is empty/],
    [[], [4], 'invalid_groups', 422, /groups lists no group/],
    [{ labels: [0, 0, 2, 2] }, [4], 'invalid_groups', 422, /group 1 is empty: no coordinate has that label/],
    [{ labels: [0, 1] }, [4], 'invalid_groups', 422, /groups labels has 2 entries, but the wrt tensor has 4 coordinates/],
    [{ labels: [0, -1, 0, 0] }, [4], 'invalid_argument', 400, /groups labels\[1\] is -1; labels are group numbers/],
    [[[0, 1.5]], [2], 'invalid_argument', 400, /group 0 holds 1.5, which is not a whole-number coordinate/],
    ['rows', [512], 'invalid_groups', 422, /groups 'rows' needs a wrt tensor with at least two axes per sample .*this one has shape \[512\]/],
    ['blocks:5', [12], 'invalid_groups', 422, /groups 'blocks:5' needs a block size that divides the 12 coordinates/],
    ['blocks:0', [12], 'invalid_groups', 422, /groups 'blocks:0' needs a block size/],
    ['0-3,a', [8], 'invalid_argument', 400, /groups: 'a' in group 1 is not a coordinate or a range a-b/],
    [42 as unknown as string, [8], 'invalid_argument', 400, /groups must be a string/],
  ];
  for (const [spec, shape, code, status, message] of cases) {
    try {
      resolveGroups(spec, shape);
      t.fail(`${JSON.stringify(spec)} was accepted`);
    } catch (err) {
      t.ok(err instanceof AuditError, `${JSON.stringify(spec)}: an AuditError`);
      const e = err as InstanceType<typeof AuditError>;
      t.equal(e.code, code, `${JSON.stringify(spec)}: ${e.message}`);
      t.equal(e.status, status);
      t.match(e.message, message);
    }
  }
});

t.test('grouped directions share one sign per group and are seeded like today’s directions', async (t) => {
  const groups = resolveGroups('0-2,3,4-5', [6]);
  const k = 4;
  const n = 3;
  const seed = 123;
  const grouped = groupedDirections(k, n, groups, seed);
  const signs = rademacherDirections(k, n * groups.count, seed);
  t.equal(grouped.length, k * n * 6);
  for (let r = 0; r < k * n; r++) {
    for (let c = 0; c < 6; c++) t.equal(grouped[r * 6 + c], signs[r * 3 + groups.assignment[c]], `row ${r} coordinate ${c}`);
  }
  t.same(expandGroupSigns(signs, groups), grouped);
  // The group basis: rows are indicator vectors, and drawing along it gives the same directions.
  const basis = groupBasis(groups);
  t.same(Array.from(basis), [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1]);
  t.same(directionsAlongBasis(signs, basis, groups.count, 6), grouped, 'bit for bit equal to directionsAlongBasis');
  // Single coordinates as groups are today's directions exactly.
  t.same(groupedDirections(k, n, resolveGroups('blocks:1', [6]), seed), rademacherDirections(k, n * 6, seed));
});

t.test('the group basis gives the group-level Hessian (G × G) through the existing basis machinery', async (t) => {
  const { evaluateHessian } = await import('../dist/metrics/evaluate.js');
  const { SessionCache } = await import('../dist/metrics/evaluate.js');
  const { loadModel } = await import('../dist/runtime/model.js');
  const { modelBytes } = await import('./helpers/reference.js');
  // G(z) = zᵀAz (models/export.py), H = A + Aᵀ; the second difference is exact for a quadratic.
  const A = [[1, 2, 0, -1], [0, 3, 1, 0], [0.5, 0, -2, 1], [0, 1, 0, 1]];
  const H = A.map((row, i) => row.map((a, j) => a + A[j][i]));
  const groups = resolveGroups('0+1,2+3', [4]);
  const basis = { type: 'float64' as const, shape: [groups.count, 4], data: groupBasis(groups) };
  const sessions = new SessionCache(1);
  const result = await evaluateHessian(
    loadModel(modelBytes('quadratic.onnx')),
    { latents: { type: 'float32', shape: [2, 4], data: Float32Array.from([0.3, -0.2, 1, 0.5, -1, 0.4, 0.1, 2]) }, basis, epsilon: 0.5 },
    { device: { kind: 'cpu' }, sessions },
  );
  sessions.clear();
  const members = [[0, 1], [2, 3]];
  const expected = members.map((a) => members.map((b) => a.reduce((s, i) => s + b.reduce((r, j) => r + H[i][j], 0), 0) ** 2));
  t.equal(result.layers[0].interaction.length, 2, 'G × G, not d × d');
  for (let a = 0; a < 2; a++) {
    for (let b = 0; b < 2; b++) {
      const got = result.layers[0].interaction[a][b];
      t.ok(Math.abs(got - expected[a][b]) < 1e-3 * Math.max(1, expected[a][b]), `(1_aᵀH1_b)² at (${a},${b}): ${got} vs ${expected[a][b]}`);
    }
  }
  // Exact penalty on the group level: 2·Σ_{a≠b} (1_aᵀH1_b)².
  t.ok(Math.abs(result.penalty! - 2 * (expected[0][1] + expected[1][0])) < 1e-2, `${result.penalty} vs ${2 * (expected[0][1] + expected[1][0])}`);
});

t.test('the HTTP schema takes the three JSON forms and leaves content checks to resolveGroups', async (t) => {
  const { GroupSpecSchema } = await import('../dist/math/groups.js');
  for (const spec of ['rows', '0-1,2-3', [[0, 1], [2, 3]], { labels: [0, 0, 1, 1] }]) {
    t.same(GroupSpecSchema.parse(spec), spec, JSON.stringify(spec));
    t.same(Array.from(resolveGroups(GroupSpecSchema.parse(spec) as never, [2, 2]).assignment), [0, 0, 1, 1]);
  }
  for (const bad of ['', 3, [1, 2], { labels: [0], extra: 1 }, { groups: [] }]) t.notOk(GroupSpecSchema.safeParse(bad).success, JSON.stringify(bad));
});
