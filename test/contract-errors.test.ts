/**
 * One contract (issue 12): the CLI builds the routes' JSON body from its flags and goes through the
 * same parser, so every request error a user can make is worded the same on both, word for word:
 * the CLI prints `error: <message>` and exits 2, HTTP answers the same message with the catalogue's
 * status and code.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ERROR_CATALOGUE } from '../dist/contract/errors.js';
import { cli } from './helpers/cli.js';
import { modelBytes, modelPath } from './helpers/reference.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const dir = mkdtempSync(join(tmpdir(), 'hessian-audit-contract-'));
const file = (name: string, content: string): string => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};

const { app } = await startApp(t);
const models = ['dcgan.onnx', 'quadratic.onnx'];
for (const name of models) {
  const form = multipart([{ name: 'model', filename: name, data: modelBytes(name) }]);
  const up = await app.inject({ method: 'POST', url: '/v1/models', payload: form.payload, headers: form.headers });
  if (up.statusCode >= 300) throw new Error(`upload of ${name} failed: ${up.body}`);
}

interface Case {
  what: string;
  metric: string;
  model: string;
  flags: string[];
  body: Record<string, unknown>;
  status: number;
  code: string;
}

const base = { model: 'dcgan.onnx', metric: 'penalty' };
const CASES: Case[] = [
  { ...base, what: 'k below 2', flags: ['--k', '1'], body: { k: 1 }, status: 400, code: 'invalid_request' },
  { ...base, what: 'k not whole', flags: ['--k', '2.5'], body: { k: 2.5 }, status: 400, code: 'invalid_request' },
  { ...base, what: 'k above the limit', flags: ['--k', '5000'], body: { k: 5000 }, status: 422, code: 'limit_exceeded' },
  { ...base, what: 'epsilon 0', flags: ['--epsilon', '0'], body: { epsilon: 0 }, status: 400, code: 'invalid_request' },
  { ...base, what: 'epsilon negative', flags: ['--epsilon', '-0.1'], body: { epsilon: -0.1 }, status: 400, code: 'invalid_request' },
  { ...base, what: 'epsilon below the range', flags: ['--epsilon', '1e-300'], body: { epsilon: 1e-300 }, status: 422, code: 'epsilon_out_of_range' },
  { ...base, what: 'an epsilons entry negative', flags: ['--epsilons', '0.1,-1'], body: { epsilons: [0.1, -1] }, status: 400, code: 'invalid_request' },
  { ...base, what: 'unknown reduction', flags: ['--reduction', 'min'], body: { reduction: 'min' }, status: 400, code: 'invalid_request' },
  { ...base, what: 'unknown variance', flags: ['--variance', 'sample'], body: { variance: 'sample' }, status: 400, code: 'invalid_request' },
  { ...base, what: 'negative samples', flags: ['--samples', '-3'], body: { latents: { samples: -3 } }, status: 400, code: 'invalid_request' },
  { ...base, what: 'fractional samples', flags: ['--samples', '2.5'], body: { latents: { samples: 2.5 } }, status: 400, code: 'invalid_request' },
  { ...base, what: 'samples above the limit', flags: ['--samples', '5000'], body: { latents: { samples: 5000 } }, status: 422, code: 'limit_exceeded' },
  { ...base, what: 'negative seed', flags: ['--seed', '-1'], body: { seed: -1 }, status: 400, code: 'invalid_request' },
  { ...base, what: 'maxSamples 0', flags: ['--max-samples', '0'], body: { maxSamples: 0 }, status: 400, code: 'invalid_request' },
  { ...base, what: 'unknown layer', flags: ['--layers', 'image,nope'], body: { layers: ['image', 'nope'] }, status: 422, code: 'unknown_layer' },
  { ...base, what: 'a layer twice', flags: ['--layers', 'image,image'], body: { layers: ['image', 'image'] }, status: 400, code: 'invalid_argument' },
  { ...base, what: 'unknown wrt', flags: ['--wrt', 'w'], body: { wrt: 'w' }, status: 422, code: 'unknown_tensor' },
  {
    ...base,
    what: 'latents of the wrong shape',
    flags: ['--latents', file('wide.json', '[[1, 2, 3]]')],
    body: { latents: [[1, 2, 3]] },
    status: 422,
    code: 'shape_mismatch',
  },
  {
    ...base,
    what: 'a NaN-free but ragged latents array',
    flags: ['--latents', file('ragged.json', '[[1, 2], [3]]')],
    body: { latents: [[1, 2], [3]] },
    status: 400,
    code: 'invalid_array',
  },
  {
    ...base,
    what: 'an input the model does not have',
    flags: ['--input', `label=${file('label.json', '[1]')}`],
    body: { inputs: { label: { data: [1] } } },
    status: 422,
    code: 'unknown_input',
  },
  { metric: 'activeness', model: 'quadratic.onnx', what: 'activeness extent 0', flags: ['--extent', '0'], body: { extent: 0 }, status: 400, code: 'invalid_request' },
  { metric: 'activeness', model: 'quadratic.onnx', what: 'negative threshold', flags: ['--threshold', '-1'], body: { threshold: -1 }, status: 400, code: 'invalid_request' },
  { metric: 'hessian', model: 'quadratic.onnx', what: 'a fractional element', flags: ['--element', '1.5'], body: { element: 1.5 }, status: 400, code: 'invalid_request' },
  { metric: 'hessian', model: 'quadratic.onnx', what: 'an element outside the layer', flags: ['--element', '7'], body: { element: 7 }, status: 422, code: 'invalid_element' },
  { metric: 'orthogonality', model: 'quadratic.onnx', what: 'orthogonality k below 2', flags: ['--k', '1'], body: { k: 1 }, status: 400, code: 'invalid_request' },
  { metric: 'hessian', model: 'quadratic.onnx', what: 'an unknown estimator', flags: ['--estimator', 'gpu'], body: { estimator: 'gpu' }, status: 400, code: 'invalid_request' },
  { metric: 'activeness', model: 'quadratic.onnx', what: 'an unknown estimator', flags: ['--estimator', 'gpu'], body: { estimator: 'gpu' }, status: 400, code: 'invalid_request' },
  { metric: 'orthogonality', model: 'quadratic.onnx', what: 'an unknown estimator', flags: ['--estimator', 'gpu'], body: { estimator: 'gpu' }, status: 400, code: 'invalid_request' },
];

for (const c of CASES) {
  t.test(`${c.metric}: ${c.what} — the same words on the CLI and over HTTP`, async (t) => {
    const drawn = c.flags.includes('--samples') || c.flags.includes('--latents') ? [] : ['--samples', '2'];
    const local = await cli(c.metric, modelPath(c.model), ...drawn, ...c.flags);
    t.equal(local.code, 2, local.stderr);
    t.equal(local.stdout, '');
    const body = c.body.latents === undefined ? { latents: { samples: 2 }, ...c.body } : c.body;
    const res = await app.inject({
      method: 'POST',
      url: `/v1/models/${sha256(modelBytes(c.model))}/${c.metric}`,
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify(body),
    });
    t.equal(res.statusCode, c.status, res.body);
    const { error } = res.json() as { error: { code: string; message: string } };
    t.equal(error.code, c.code);
    t.equal(ERROR_CATALOGUE[error.code as keyof typeof ERROR_CATALOGUE], c.status, 'the status is the catalogue’s');
    t.equal(local.stderr.trim(), `error: ${error.message}`, 'word for word');
  });
}

t.test('the server is still up and gives numbers after every refusal', async (t) => {
  const res = await app.inject({
    method: 'POST',
    url: `/v1/models/${sha256(modelBytes('quadratic.onnx'))}/penalty`,
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ latents: { samples: 2 }, seed: 1, k: 2, noise: false }),
  });
  t.equal(res.statusCode, 200);
  t.ok(res.json().penalty > 0);
});
