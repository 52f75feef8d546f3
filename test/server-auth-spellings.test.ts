/**
 * Authentication is decided from the matched route, not the raw URL (issue 11, item 1). Every
 * /v1 route of the OpenAPI document, spelled every way a router might still match it (any one
 * character percent-encoded, in upper and lower case hex, every character encoded, doubled
 * slashes, case, trailing junk, dot segments, query tricks), is sent without a token through
 * inject and over a real socket: none gets past 401, nothing is stored or deleted. With the
 * token, the encoded spellings do reach the handlers, so they are real ways in.
 */
import { request as httpRequest } from 'node:http';
import { readdirSync } from 'node:fs';
import t from 'tap';
import { modelBytes } from './helpers/reference.js';
import { spawnServer, upload as uploadChild } from './helpers/serve-child.js';
import { multipart, sha256, startApp } from './helpers/server.js';

const TOKEN = 'spelling-test-token';
const model = modelBytes('mlp.onnx');
const id = sha256(model);
const other = modelBytes('linear_orthogonal.onnx');

const hex = (c: string): string => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`;

/** Spellings of one path that a lenient router could still send to its handler. */
export function spellings(path: string): string[] {
  const out = new Set<string>();
  for (let i = 0; i < path.length; i++) {
    const c = path[i];
    out.add(path.slice(0, i) + hex(c).toUpperCase() + path.slice(i + 1));
    out.add(path.slice(0, i) + hex(c).toLowerCase() + path.slice(i + 1));
    if (c === '/') out.add(`${path.slice(0, i)}//${path.slice(i + 1)}`);
  }
  out.add([...path].map(hex).join(''));
  out.add([...path].map((c) => (c === '/' ? c : hex(c))).join(''));
  out.add(path.toUpperCase());
  out.add(path.replace('/v1', '/V1'));
  for (const tail of ['/', '?', '?a=1', '#x', '%20', '%00', ';x', '/.', '/..', '%2F', '?/healthz', '&', '%23']) out.add(path + tail);
  out.add(`/healthz/..${path}`);
  out.add(`/v1/x/..${path.slice(3)}`);
  out.add(`/v1/.${path.slice(3)}`);
  out.add(`/v1/%2e${path.slice(3)}`);
  out.add(`/docs/../${path.slice(1)}`);
  out.add(`//${path.slice(1)}`);
  out.add(`/.${path}`);
  out.add(`${path}?token=${TOKEN}`);
  return [...out];
}

/** The protected routes, from the app's own OpenAPI document, with a real model id filled in. */
function protectedRoutes(openapi: { paths: Record<string, Record<string, unknown>> }): { method: string; path: string }[] {
  return Object.entries(openapi.paths)
    .filter(([p]) => p.startsWith('/v1'))
    .flatMap(([p, methods]) => Object.keys(methods).map((m) => ({ method: m.toUpperCase(), path: p.replace('{id}', id) })));
}

const storeFiles = (dir: string): string[] => readdirSync(dir).filter((n) => n !== '.tmp').sort();

t.test('inject: no spelling of a /v1 path reaches a handler without the token', async (t) => {
  const { app, dir } = await startApp(t, { token: TOKEN });
  const auth = { authorization: `Bearer ${TOKEN}` };
  const form = multipart([{ name: 'model', data: model, filename: 'm.onnx' }]);
  t.equal((await app.inject({ method: 'POST', url: '/v1/models', ...form, headers: { ...form.headers, ...auth } })).statusCode, 201);
  const before = storeFiles(dir);
  const routes = protectedRoutes(app.swagger() as never);
  t.ok(routes.length >= 9, `${routes.length} protected routes`);
  let sent = 0;
  for (const { method, path } of routes) {
    for (const url of spellings(path)) {
      const body = method === 'POST' ? multipart([{ name: 'model', data: other, filename: 'o.onnx' }]) : undefined;
      const r = await app.inject({ method: method as 'GET', url, ...(body ?? {}) });
      sent++;
      // 401, or 400 from the router for a target that is not a path; never a handler's answer.
      if (r.statusCode !== 401 && !(r.statusCode === 400 && r.json().error.code === 'bad_request')) t.fail(`${method} ${url}: ${r.statusCode} ${r.body.slice(0, 200)}`);
    }
  }
  t.ok(sent > 500, `${sent} spellings sent`);
  t.same(storeFiles(dir), before, 'nothing was uploaded or deleted');

  // The spellings are real: with the token, percent-encoded paths reach the handlers.
  const describe = await app.inject({ method: 'GET', url: `/v1/%6Dodels/${id}`, headers: auth });
  t.equal(describe.statusCode, 200);
  t.equal(describe.json().id, id);
  const anonymous = await app.inject({ method: 'GET', url: `/v1/%6Dodels/${id}` });
  t.equal(anonymous.statusCode, 401);
  t.equal(anonymous.json().error.code, 'unauthorized');
  const deleted = await app.inject({ method: 'DELETE', url: `/%761/models/${id}` });
  t.equal(deleted.statusCode, 401);
  t.same(storeFiles(dir), before, 'the encoded DELETE without a token deleted nothing');
  // Public routes stay public; an unknown path is 401 too, so it tells an anonymous client nothing.
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200);
  t.equal((await app.inject({ method: 'GET', url: '/openapi.json' })).statusCode, 200);
  t.equal((await app.inject({ method: 'GET', url: '/v1/nothing' })).statusCode, 401);
  t.equal((await app.inject({ method: 'GET', url: '/v1/nothing', headers: auth })).statusCode, 404);
});

interface Raw {
  status: number;
  body: string;
}

function raw(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: false, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) }, timeout: 30_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.end(body);
  });
}

t.test('over a real socket: every spelling of every /v1 route is refused without the token', async (t) => {
  const server = await spawnServer(t, ['--workers', '1'], { env: { HESSIAN_AUDIT_TOKEN: TOKEN } });
  const port = Number(new URL(server.url).port);
  const form = multipart([{ name: 'model', data: model, filename: 'm.onnx' }]);
  const up = await raw(port, 'POST', '/v1/models', { ...form.headers, authorization: `Bearer ${TOKEN}` }, form.payload);
  t.equal(up.status, 201);
  const before = storeFiles(server.dir);
  t.equal((await uploadChild(server.url, other)).status, 401, 'a plain upload without the token is refused');
  const openapi = JSON.parse((await raw(port, 'GET', '/openapi.json')).body);
  const routes = protectedRoutes(openapi);
  const upload = multipart([{ name: 'model', data: other, filename: 'o.onnx' }]);
  const statuses: Record<number, number> = {};
  for (const { method, path } of routes) {
    for (const url of spellings(path)) {
      // Node refuses a request line with a raw '#' or NUL before any route: still not a handler.
      const r = await raw(port, method, url, method === 'POST' ? upload.headers : {}, method === 'POST' ? upload.payload : undefined).catch((err: Error) => ({ status: -1, body: err.message }));
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      // A request target not starting with '/' is refused by Node's parser, which closes the connection.
      const refusedByNode = r.status === -1 && !url.startsWith('/');
      if (r.status !== 401 && r.status !== 400 && !refusedByNode) t.fail(`${method} ${url}: ${r.status} ${r.body.slice(0, 200)}`);
      if (r.status === 400 && r.body.includes('"code"')) t.notMatch(r.body, /"code":"(invalid_request|missing_model|malformed_json)"/, `${method} ${url}: a 400 from a handler means it was reached`);
    }
  }
  t.comment(`statuses without a token: ${JSON.stringify(statuses)}`);
  t.ok((statuses[401] ?? 0) > 500, 'hundreds of spellings, each refused with 401');
  t.same(storeFiles(server.dir), before, 'nothing was uploaded or deleted');
  const described = await raw(port, 'GET', `/v1/m%6Fdels/${id}`, { authorization: `Bearer ${TOKEN}` });
  t.equal(described.status, 200, 'the same spelling with the token reaches the handler');
  t.equal((await raw(port, 'GET', '/healthz')).status, 200, 'the server still answers');
});
