/**
 * A client generated from /openapi.json, as a new user makes one (openapi-typescript, then
 * openapi-fetch): it type-checks under --strict with no cast, sends `Prefer: respond-async`, gets 202
 * with Location, polls the job to its end and reads the result, against the real server.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import openapiTS, { astToString } from 'openapi-typescript';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { spawnServer, upload } from './helpers/serve-child.js';

const ROOT = new URL('..', import.meta.url).pathname;

/** The user's client: every type from the generated schema, no `as`. */
const CLIENT = `import createClient from 'openapi-fetch';
import type { paths } from './schema.js';

const [base, model] = process.argv.slice(2);
const client = createClient<paths>({ baseUrl: base });
const submitted = await client.POST('/v1/models/{id}/penalty', {
  params: { path: { id: model }, header: { prefer: 'respond-async' } },
  body: { k: 2, seed: 1, latents: { samples: 4 } },
});
const location = submitted.response.headers.get('location');
if (submitted.response.status !== 202 || location === null) throw new Error('not accepted: ' + submitted.response.status);
const id = location.slice('/v1/jobs/'.length);
let state = 'queued';
let total: unknown = undefined;
for (let i = 0; i < 600 && (state === 'queued' || state === 'running'); i++) {
  const polled = await client.GET('/v1/jobs/{id}', { params: { path: { id } } });
  if (!polled.data) throw new Error('poll: ' + polled.response.status);
  state = polled.data.state;
  total = polled.data.result;
  await new Promise((r) => setTimeout(r, 50));
}
const gone = await client.GET('/v1/jobs/{id}', { params: { path: { id: 'no-such-job' } } });
console.log(JSON.stringify({ status: submitted.response.status, location, state, hasResult: total !== undefined, missing: gone.error?.error.code }));
`;

t.test('a generated openapi-fetch client submits and polls a job with no cast', async (t) => {
  const server = await spawnServer(t);
  const model = (await upload(server.url, modelBytes('mlp.onnx'))).body.id as string;
  const doc = await (await fetch(`${server.url}/openapi.json`)).json();
  // Inside the project, so that the client resolves openapi-fetch from its node_modules.
  const cache = join(ROOT, 'node_modules', '.cache');
  mkdirSync(cache, { recursive: true });
  const dir = mkdtempSync(join(cache, 'ha-openapi-client-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'schema.ts'), astToString(await openapiTS(doc)));
  writeFileSync(join(dir, 'client.ts'), CLIENT);
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const options = ['--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--skipLibCheck', '--outDir', join(dir, 'out'), join(dir, 'client.ts')];
  let compiled = '';
  try {
    execFileSync(process.execPath, [tsc, ...options], { encoding: 'utf8' });
  } catch (err) {
    compiled = String((err as { stdout?: string }).stdout ?? err);
  }
  t.equal(compiled, '', 'the client type-checks against the generated schema');
  const out = execFileSync(process.execPath, [join(dir, 'out', 'client.js'), server.url, model], { encoding: 'utf8', timeout: 60_000 });
  t.same(JSON.parse(out), { status: 202, location: JSON.parse(out).location, state: 'succeeded', hasResult: true, missing: 'unknown_job' });
  t.match(JSON.parse(out).location, /^\/v1\/jobs\/[0-9a-f-]{36}$/);
});
