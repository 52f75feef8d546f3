/**
 * `--server` for penalty and audit: the same request the local run builds, sent as a job to a
 * hessian-audit server (uploading the model only when the server lacks it), waiting out a busy
 * server within --wait, with progress on stderr. The result is printed exactly as a local one.
 */
import { basename } from 'node:path';
import { type Command, Option } from 'commander';
import type { MetricRequest } from '../contract/request.js';
import { invalid } from '../contract/errors.js';
import type { LoadedModel } from '../runtime/model.js';
import { type Io, readModelFile } from './common.js';
import { progressReporter } from './progress.js';
import { DEFAULT_WAIT_MS, parseWait, RemoteClient, toInputArray, toNested } from './remote.js';
import type { NDArray } from '../io/ndarray.js';

/** --server, --token, --wait: shared by every command that can run on a server. */
export function serverOptions(command: Command, what: string): Command {
  return command
    .option('--server <url>', `run the ${what} on a hessian-audit server (uploads only the models it does not have)`)
    .addOption(new Option('--token <token>', 'bearer token for --server').env('HESSIAN_AUDIT_TOKEN'))
    .option('--wait <duration>', 'with --server: how long, in all, to wait for a busy server (503 + Retry-After), e.g. 90s, 10m', '10m');
}

/** --quiet: no progress on stderr. */
export const quietOption = (command: Command): Command => command.option('--quiet', 'no progress on stderr');

export function remoteClient(options: Record<string, unknown>): RemoteClient {
  const onProgress = progressReporter({ quiet: options.quiet === true });
  return new RemoteClient({
    server: options.server as string,
    ...(options.token ? { token: options.token as string } : {}),
    waitMs: options.wait === undefined ? DEFAULT_WAIT_MS : parseWait(options.wait as string),
    ...(onProgress ? { onProgress } : {}),
  });
}

/** A request with arrays (NDArray) → the API's JSON body. */
export function requestBody(request: MetricRequest): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(request)) {
    if (value === undefined) continue;
    if (key === 'inputs') {
      const inputs = value as Record<string, NDArray>;
      if (Object.keys(inputs).length > 0) body.inputs = Object.fromEntries(Object.entries(inputs).map(([name, a]) => [name, toInputArray(a)]));
    } else if (key === 'latents' && 'samples' in (value as object)) {
      body.latents = value;
    } else if (key === 'latents' || key === 'directions' || key === 'basis') {
      body[key] = toNested(value as NDArray);
    } else {
      body[key] = value;
    }
  }
  return body;
}

/** Upload the model if needed, run `route` on it as a job, return the synchronous route's body. */
export async function runRemote(
  io: Io,
  path: string,
  route: string,
  request: MetricRequest,
  options: Record<string, unknown>,
): Promise<{ result: unknown; model: LoadedModel }> {
  for (const flag of ['memoryBudget', 'report'] as const) {
    if (options[flag] !== undefined) {
      throw invalid(
        flag === 'report'
          ? '--report applies to local runs; with --server, ask the server for the report (Accept: text/html, docs/server.md)'
          : "--memory-budget applies to local runs; with --server the server's limits apply",
      );
    }
  }
  if (options.device !== undefined && options.device !== 'cpu') throw invalid("--device applies to local runs; with --server the server's devices apply");
  const client = remoteClient(options);
  const model = await readModelFile(path);
  if ((await client.ensureModel(model.id, model.bytes, basename(path))) === 'uploaded') {
    io.stderr(`uploaded ${path} (sha256 ${model.id.slice(0, 12)}) to ${options.server as string}`);
  }
  return { result: await client.job(`/v1/models/${model.id}/${route}`, requestBody(request)), model };
}
