import t from 'tap';
import * as ort from 'onnxruntime-node';
import { parseDevice } from '../dist/runtime/device.js';
import { evaluatePenalty } from '../dist/metrics/evaluate.js';
import { loadModel } from '../dist/runtime/model.js';
import { DEFAULT_MAX_SESSIONS, type OpenSession, SessionCache } from '../dist/runtime/session.js';
import { AuditError } from '../dist/contract/errors.js';
import { encode, linearModel } from './helpers/onnx-build.js';
import { modelBytes } from './helpers/reference.js';

const cpu = parseDevice('cpu');
const MODELS = ['linear_orthogonal.onnx', 'linear_correlated.onnx', 'mlp.onnx'].map((name) => loadModel(modelBytes(name)));
const [A, B, C] = MODELS;

/** Count release() calls on a session (and still release it for real). */
function spy(open: OpenSession): { released: () => number } {
  let calls = 0;
  const release = open.session.release.bind(open.session);
  open.session.release = async () => {
    calls += 1;
    return release();
  };
  return { released: () => calls };
}
const settle = () => new Promise((resolve) => setImmediate(resolve));

t.test('the capacity is a setting: whole numbers of at least 1', async (t) => {
  t.equal(new SessionCache().capacity, DEFAULT_MAX_SESSIONS);
  t.equal(new SessionCache(3).capacity, 3);
  for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new SessionCache(bad), { code: 'invalid_argument', status: 400, message: /whole number of at least 1/ });
  }
});

t.test('opening one model more than the capacity releases the least recently used session', async (t) => {
  const cache = new SessionCache(2);
  const a = await cache.get(A.id, A.bytes, [], cpu);
  const spyA = spy(a);
  const b = await cache.get(B.id, B.bytes, [], cpu);
  const spyB = spy(b);
  t.equal(cache.size, 2);
  t.equal(await cache.get(A.id, A.bytes, [], cpu), a, 'a hit returns the same session and makes A the most recent');

  const c = await cache.get(C.id, C.bytes, [], cpu);
  await settle();
  t.equal(cache.size, 2);
  t.equal(cache.evictions, 1);
  t.equal(spyB.released(), 1, 'B, the least recently used, was released');
  t.equal(spyA.released(), 0, 'A, used more recently, was kept');
  t.equal(await cache.get(A.id, A.bytes, [], cpu), a);

  const b2 = await cache.get(B.id, B.bytes, [], cpu);
  await settle();
  t.not(b2, b, 'B comes back as a new session');
  t.equal(cache.evictions, 2, 'and C made room for it');
  const spyC = spy(c);
  // The reopened session computes: y = z · W for linear_correlated.
  const out = await b2.session.run({ z: new ort.Tensor('float32', new Float32Array([1, 0, 0]), [1, 3]) });
  t.equal((out[b2.session.outputNames[0]].data as Float32Array).length, 4);

  await cache.clear();
  t.equal(cache.size, 0);
  t.equal(spyA.released(), 1, 'clear() releases what is left');
  t.equal(spyC.released(), 0, 'C was already released by eviction, not again');
});

t.test('a model onnxruntime refuses is not cached and takes no slot', async (t) => {
  const cache = new SessionCache(1);
  await cache.get(A.id, A.bytes, [], cpu);
  // Passes the upload checks (MatMul with mismatched inner dimensions) but onnxruntime refuses it.
  const bad = encode(linearModel({ initializer: [{ name: 'W', dims: [5, 4], dataType: 1, floatData: Array(20).fill(1) }] }));
  const model = loadModel(bad);
  const err = await cache.get(model.id, model.bytes, [], cpu).then(() => null, (e: unknown) => e);
  t.ok(err instanceof AuditError);
  t.match(err, { code: 'invalid_model', status: 422, message: /onnxruntime cannot load the model/ });
  await settle();
  t.equal(cache.size, 1);
  await cache.clear();
});

t.test('a capacity of 1 still gives the same numbers as the model is evicted and reopened', async (t) => {
  const cache = new SessionCache(1);
  const request = { latents: { samples: 3 }, k: 4, seed: 5 };
  const first = await evaluatePenalty(C, request, { device: cpu, sessions: cache });
  await evaluatePenalty(A, request, { device: cpu, sessions: cache });
  const again = await evaluatePenalty(C, request, { device: cpu, sessions: cache });
  t.equal(cache.evictions, 2);
  t.same(again.layers, first.layers);
  await cache.clear();
});
