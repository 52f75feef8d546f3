/**
 * Content-addressed model store: each model lives at <dir>/<sha256>.onnx, its description beside
 * it as <sha256>.json. Uploads stream into <dir>/.tmp while hashing, are fsynced, and are renamed
 * into place only after they were checked; anything else (a size limit hit, a client that hangs
 * up, bytes that are not ONNX) removes the temporary file, so the store never holds a partial model.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { AuditError } from '../contract/errors.js';

const ID = /^[0-9a-f]{64}$/;

/** An upload written to a temporary file, not yet in the store. */
export interface StagedModel {
  id: string;
  size: number;
  path: string;
}

export interface StoreOptions {
  /** Bytes the stored models and descriptions may take; undefined or 0: no quota. */
  quotaBytes?: number;
}

export class ModelStore {
  readonly tmpDir: string;
  /** Bytes of models and descriptions in the folder, counting commits in progress. */
  private used = 0;

  private constructor(
    readonly dir: string,
    readonly quotaBytes: number,
  ) {
    this.tmpDir = join(dir, '.tmp');
  }

  /** Open (creating it if needed) and remove leftovers of uploads interrupted by a crash. */
  static async open(dir: string, options: StoreOptions = {}): Promise<ModelStore> {
    const store = new ModelStore(dir, options.quotaBytes ?? 0);
    await mkdir(store.tmpDir, { recursive: true });
    for (const name of await readdir(store.tmpDir)) await rm(join(store.tmpDir, name), { force: true });
    for (const name of await readdir(dir)) {
      if (name.endsWith('.onnx') || name.endsWith('.json')) store.used += (await stat(join(dir, name))).size;
    }
    return store;
  }

  /** Bytes the store holds (models and their descriptions). */
  get usedBytes(): number {
    return this.used;
  }

  static isId(id: string): boolean {
    return ID.test(id);
  }

  modelPath(id: string): string {
    if (!ModelStore.isId(id)) throw new Error(`not a model id: ${id}`);
    return join(this.dir, `${id}.onnx`);
  }

  private descriptionPath(id: string): string {
    return join(this.dir, `${id}.json`);
  }

  /** Stream bytes to a temporary file, hashing them on the way. Any stream error removes the file. */
  async stage(source: Readable | Uint8Array): Promise<StagedModel> {
    const path = join(this.tmpDir, `${randomUUID()}.part`);
    const hash = createHash('sha256');
    let size = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    try {
      const input = source instanceof Uint8Array ? [Buffer.from(source.buffer, source.byteOffset, source.byteLength)] : source;
      await pipeline(input, tap, createWriteStream(path, { flags: 'wx' }));
      const handle = await open(path, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (err) {
      await rm(path, { force: true });
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new AuditError('store_full', `the model store's disk is full (${code}); nothing was stored`);
      }
      throw err;
    }
    return { id: hash.digest('hex'), size, path };
  }

  /** Move a checked upload into place with its description; the same bytes give the same id. */
  async commit(staged: StagedModel, description: unknown): Promise<{ created: boolean }> {
    const created = !(await this.has(staged.id));
    const text = JSON.stringify(description);
    // Checked and reserved in one synchronous step, so concurrent uploads cannot both squeeze in.
    const adds = created ? staged.size + Buffer.byteLength(text) : 0;
    if (this.quotaBytes > 0 && adds > 0 && this.used + adds > this.quotaBytes) {
      throw new AuditError(
        'store_full',
        `the model store is full: this model needs ${kib(adds)} and ${kib(this.used)} of the quota of ${kib(this.quotaBytes)} are used; delete models (DELETE /v1/models/:id) or raise --store-quota-mib; nothing was stored`,
        { quotaBytes: this.quotaBytes, usedBytes: this.used, neededBytes: adds },
      );
    }
    this.used += adds;
    try {
      await writeDurably(this.descriptionPath(staged.id), text, this.tmpDir);
      await rename(staged.path, this.modelPath(staged.id));
      await syncDir(this.dir);
    } catch (err) {
      this.used -= adds;
      throw err;
    }
    return { created };
  }

  async discard(staged: StagedModel): Promise<void> {
    await rm(staged.path, { force: true });
  }

  async has(id: string): Promise<boolean> {
    if (!ModelStore.isId(id)) return false;
    try {
      return (await stat(this.modelPath(id))).isFile();
    } catch {
      return false;
    }
  }

  /** The stored description, or undefined for an unknown id. */
  async description<T = unknown>(id: string): Promise<T | undefined> {
    if (!(await this.has(id))) return undefined;
    return JSON.parse(await readFile(this.descriptionPath(id), 'utf8')) as T;
  }

  async size(id: string): Promise<number> {
    return (await stat(this.modelPath(id))).size;
  }

  /** Remove a model; false when it was not there. */
  async delete(id: string): Promise<boolean> {
    if (!(await this.has(id))) return false;
    const sizes = await Promise.all([this.modelPath(id), this.descriptionPath(id)].map((p) => stat(p).then((s) => s.size, () => 0)));
    await unlink(this.modelPath(id));
    await rm(this.descriptionPath(id), { force: true });
    this.used -= sizes[0] + sizes[1];
    return true;
  }

  async list(): Promise<string[]> {
    return (await readdir(this.dir)).filter((n) => n.endsWith('.onnx')).map((n) => n.slice(0, -5)).filter(ModelStore.isId);
  }
}

const kib = (bytes: number): string => `${Math.round(bytes / 1024)} KiB`;

async function writeDurably(path: string, text: string, tmpDir: string): Promise<void> {
  const tmp = join(tmpDir, `${randomUUID()}.json`);
  const handle = await open(tmp, 'wx');
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, path);
}

/** fsync the directory so the rename itself survives a power cut (a no-op where unsupported). */
async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch {
    // Some platforms cannot open or sync directories; the rename is still atomic.
  }
}
