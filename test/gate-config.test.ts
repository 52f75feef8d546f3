import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { GATE_DEFAULTS, gateSpec, parseGateConfig, readGateConfig } from '../dist/gate/config.js';

const fails = (value: unknown): { code: string; status: number; message: string } => {
  try {
    parseGateConfig(value, 'gate.json');
  } catch (err) {
    const e = err as { code: string; status: number; message: string };
    return { code: e.code, status: e.status, message: e.message };
  }
  throw new Error('expected the config to be refused');
};

t.test('a full config parses', async (t) => {
  const config = {
    $schema: './gate.schema.json',
    confidence: 0.9,
    resamples: 500,
    rules: { maxIncrease: 0.05, maxPenalty: 2 },
    layers: { '/fc/Gemm_output_0': { maxIncrease: null }, image: { maxPenalty: 0.5 } },
    total: { maxPenalty: 3, maxIncrease: 0.2 },
    layerMap: { image: 'rgb' },
    penalty: { samples: 32, seed: 7, k: 8, epsilon: 0.05, reduction: 'mean', variance: 'biased', layers: ['image'], wrt: 'z' },
  };
  t.same(parseGateConfig(config, 'gate.json'), config);
});

t.test('errors name the bad key path in the notation a user would type', async (t) => {
  const unknown = fails({ rules: { maxIncrese: 0.1 } });
  t.equal(unknown.code, 'invalid_config');
  t.equal(unknown.status, 400);
  t.equal(unknown.message, 'gate.json: rules.maxIncrese: unknown key (known: maxIncrease, maxPenalty, minDiagonalFraction, maxUnusedLatents, minNoiseMargin)');

  t.equal(
    fails({ layers: { '/fc/Gemm_output_0': { maxPenalty: -1 } } }).message,
    'gate.json: layers["/fc/Gemm_output_0"].maxPenalty: Too small: expected number to be >=0',
  );
  // The penalty section is the API's penalty request schema (its messages), plus samples.
  t.equal(fails({ penalty: { k: 2.5 } }).message, 'gate.json: penalty.k: must be a whole number');
  t.match(fails({ penalty: { k: 1 } }).message, /^gate\.json: penalty\.k: must be at least 2/);
  t.equal(fails({ penalty: { samples: 1 } }).message, 'gate.json: penalty.samples: must be at least 2 (the interval needs two samples)');
  t.match(fails({ penalty: { latents: [[1]] } }).message, /^gate\.json: penalty\.latents: unknown key/);
  t.match(fails({ penalty: { reduction: 'median' } }).message, /^gate\.json: penalty\.reduction: .*"max"\|"mean"/);
  t.match(fails({ penalty: { layers: ['a', 3] } }).message, /^gate\.json: penalty\.layers\[1\]: .*expected string/);
  t.match(fails({ confidence: 1 }).message, /^gate\.json: confidence: Too big/);
  t.match(fails({ resamples: 10 }).message, /^gate\.json: resamples: Too small/);
  t.match(fails({ rules: { maxIncrease: '10%' } }).message, /^gate\.json: rules\.maxIncrease: .*expected number, received string/);
  t.equal(fails({ sample: 3 }).message.split(' (known')[0], 'gate.json: sample: unknown key');
  t.equal(fails([1]).message, 'gate.json: (top level): Invalid input: expected object, received array');
  const two = fails({ total: { maxPenalty: 'x' }, extra: 1 });
  t.match(two.message, /total\.maxPenalty: .*; extra: unknown key/, 'every problem is listed');
});

t.test('config files: unreadable, not JSON, bad key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gate-config-'));
  await t.rejects(readGateConfig(join(dir, 'missing.json')), { code: 'file_not_found', message: /cannot read config .*missing\.json: ENOENT/ });
  writeFileSync(join(dir, 'bad.json'), '{"rules": {');
  await t.rejects(readGateConfig(join(dir, 'bad.json')), { code: 'invalid_config', message: /bad\.json is not valid JSON/ });
  writeFileSync(join(dir, 'typo.json'), JSON.stringify({ rules: { maxPenalti: 1 } }));
  await t.rejects(readGateConfig(join(dir, 'typo.json')), { code: 'invalid_config', message: /typo\.json: rules\.maxPenalti: unknown key/ });
});

t.test('defaults, and later configs win key by key', async (t) => {
  const spec = gateSpec([]);
  t.same(spec.rules, { maxIncrease: GATE_DEFAULTS.maxIncrease, minNoiseMargin: GATE_DEFAULTS.minNoiseMargin });
  t.same(spec.penalty, { k: GATE_DEFAULTS.k, latents: { samples: GATE_DEFAULTS.samples }, seed: GATE_DEFAULTS.seed });
  t.equal(spec.confidence, 0.95);
  t.equal(spec.resamples, 2000);

  const merged = gateSpec([
    { rules: { maxIncrease: 0.2, maxPenalty: 1 }, layers: { a: { maxPenalty: 5, maxIncrease: 0.3 } }, penalty: { samples: 16, k: 8 } },
    { rules: { maxIncrease: null }, layers: { a: { maxPenalty: 6 } }, penalty: { k: 2 }, confidence: 0.9 },
  ]);
  t.same(merged.rules, { maxIncrease: null, maxPenalty: 1, minNoiseMargin: 10 }, 'null switches the default off');
  t.same(merged.layers, { a: { maxPenalty: 6, maxIncrease: 0.3 } });
  t.same(merged.penalty, { k: 2, latents: { samples: 16 }, seed: 0 });
  t.equal(merged.confidence, 0.9);

  const latents = { type: 'float32' as const, shape: [2, 3], data: new Float32Array(6) };
  t.same(gateSpec([], { latents }).penalty.latents, latents);
  t.throws(() => gateSpec([{ penalty: { samples: 4 } }], { latents }), /either latents or samples/);
});
