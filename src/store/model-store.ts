/**
 * Content-addressed model store: each model lives at <dir>/<sha256>.onnx, its description beside
 * it as <sha256>.json. Uploads stream into <dir>/.tmp while hashing, are fsynced, and are renamed
 * into place only after they were checked; anything else (a size limit hit, a client that hangs
 * up, bytes that are not ONNX, a full disk) removes the temporary files, so the store never holds a
 * partial model. Commit and delete of one id run one at a time, so the bytes counted always equal
 * the bytes on disk, however uploads and deletes of the same model interleave.
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

/** The writes the store makes, in order; a test hook can fail any of them (a full disk). */
export type WriteStep = 'stage' | 'sync-model' | 'write-description' | 'place-description' | 'place-model';

export interface StoreOptions {
  /** Bytes the stored models and descriptions may take; undefined or 0: no quota. */
  quotaBytes?: number;
  /** Called before each write; throwing from it stands for that write failing (tests inject ENOSPC). */
  beforeWrite?: (step: WriteStep) => void;
}

const diskFull = (err: unknown): AuditError | undefined => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOSPC' || code === 'EDQUOT'
    ? new AuditError('store_full', `the model store's disk is full (${code}); nothing was stored`, { errno: code })
    : undefined;
};

export class ModelStore {
  readonly tmpDir: string;
  /** Bytes of models and descriptions in the folder, counting commits in progress. */
  private used = 0;
  /** The tail of the commits and deletes of each id, so they run one after the other. */
  private readonly locks = new Map<string, Promise<unknown>>();

  private constructor(
    readonly dir: string,
    readonly quotaBytes: number,
    private readonly beforeWrite: (step: WriteStep) => void,
  ) {
    this.tmpDir = join(dir, '.tmp');
  }

  /** Open (creating it if needed) and remove leftovers of uploads interrupted by a crash. */
  static async open(dir: string, options: StoreOptions = {}): Promise<ModelStore> {
    const store = new ModelStore(dir, options.quotaBytes ?? 0, options.beforeWrite ?? (() => undefined));
    await mkdir(store.tmpDir, { recursive: true });
    await store.removeTemporaries();
    const names = new Set(await readdir(dir));
    for (const name of names) {
      // A description without its model is what a crash between the two renames leaves.
      if (name.endsWith('.json') && !names.has(`${name.slice(0, -5)}.onnx`)) await rm(join(dir, name), { force: true });
      else if (name.endsWith('.onnx') || name.endsWith('.json')) store.used += (await stat(join(dir, name))).size;
    }
    return store;
  }

  /** Remove every temporary file (at start, and after a drain when no upload is in flight). */
  async removeTemporaries(): Promise<void> {
    for (const name of await readdir(this.tmpDir).catch(() => [])) await rm(join(this.tmpDir, name), { force: true });
  }

  /** Run `fn` once every earlier commit or delete of `id` has finished. */
  private async exclusive<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.locks.get(id) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => undefined);
    this.locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
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
    const beforeWrite = this.beforeWrite;
    const tap = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        size += chunk.length;
        try {
          beforeWrite('stage');
        } catch (err) {
          done(err as Error);
          return;
        }
        done(null, chunk);
      },
    });
    try {
      const input = source instanceof Uint8Array ? [Buffer.from(source.buffer, source.byteOffset, source.byteLength)] : source;
      await pipeline(input, tap, createWriteStream(path, { flags: 'wx' }));
      const handle = await open(path, 'r');
      try {
        this.beforeWrite('sync-model');
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (err) {
      await rm(path, { force: true });
      throw diskFull(err) ?? err;
    }
    return { id: hash.digest('hex'), size, path };
  }

  /**
   * Move a checked upload into place with its description; the same bytes give the same id, and
   * an upload of bytes already stored (or stored meanwhile by a concurrent upload) is discarded.
   * The description goes in first and the model last, so a stored model always has one.
   */
  async commit(staged: StagedModel, description: unknown): Promise<{ created: boolean }> {
    return this.exclusive(staged.id, async () => {
      if (await this.has(staged.id)) {
        await this.discard(staged);
        return { created: false };
      }
      const text = JSON.stringify(description);
      const adds = staged.size + Buffer.byteLength(text);
      // Checked and reserved in one synchronous step, so concurrent uploads cannot both squeeze in.
      if (this.quotaBytes > 0 && this.used + adds > this.quotaBytes) {
        throw new AuditError(
          'store_full',
          `the model store is full: this model needs ${kib(adds)} and ${kib(this.used)} of the quota of ${kib(this.quotaBytes)} are used; delete models (DELETE /v1/models/:id) or raise --store-quota-mib; nothing was stored`,
          { quotaBytes: this.quotaBytes, usedBytes: this.used, neededBytes: adds },
        );
      }
      this.used += adds;
      const tmp = join(this.tmpDir, `${randomUUID()}.json`);
      let placed = false;
      try {
        await this.writeDurably(tmp, text);
        this.beforeWrite('place-description');
        await rename(tmp, this.descriptionPath(staged.id));
        placed = true;
        this.beforeWrite('place-model');
        await rename(staged.path, this.modelPath(staged.id));
        await syncDir(this.dir);
      } catch (err) {
        this.used -= adds;
        await rm(tmp, { force: true });
        if (placed) await rm(this.descriptionPath(staged.id), { force: true });
        throw diskFull(err) ?? err;
      }
      return { created: true };
    });
  }

  private async writeDurably(path: string, text: string): Promise<void> {
    const handle = await open(path, 'wx');
    try {
      this.beforeWrite('write-description');
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

  async discard(staged: StagedModel): Promise<void> {
    await rm(staged.path, { force: true });
  }

  /**
   * A one-shot job's model: the staged upload moves to <dir>/.jobs/<name>, out of reach of the
   * start-up sweep of .tmp, so the job may run later or on another server that shares the folder.
   * Returns its name; the job removes it when it ends (`releaseJobFile`).
   */
  async adopt(staged: StagedModel): Promise<string> {
    const name = `${randomUUID()}.onnx`;
    await mkdir(join(this.dir, '.jobs'), { recursive: true });
    await rename(staged.path, this.jobFilePath(name));
    return name;
  }

  jobFilePath(name: string): string {
    if (!/^[0-9a-f-]{36}\.onnx$/.test(name)) throw new Error(`not a job file: ${name}`);
    return join(this.dir, '.jobs', name);
  }

  async releaseJobFile(name: string): Promise<void> {
    await rm(this.jobFilePath(name), { force: true });
  }

  async has(id: string): Promise<boolean> {
    if (!ModelStore.isId(id)) return false;
    try {
      return (await stat(this.modelPath(id))).isFile();
    } catch {
      return false;
    }
  }

  /** The stored description, or undefined for an unknown id (or one deleted while being read). */
  async description<T = unknown>(id: string): Promise<T | undefined> {
    if (!(await this.has(id))) return undefined;
    try {
      return JSON.parse(await readFile(this.descriptionPath(id), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Bytes of a stored model; undefined when it is not (or no longer) there. */
  async size(id: string): Promise<number | undefined> {
    if (!ModelStore.isId(id)) return undefined;
    return stat(this.modelPath(id)).then(
      (s) => s.size,
      () => undefined,
    );
  }

  /** Remove a model; false when it was not there (or another delete of it came first). */
  async delete(id: string): Promise<boolean> {
    if (!ModelStore.isId(id)) return false;
    return this.exclusive(id, async () => {
      if (!(await this.has(id))) return false;
      const sizes = await Promise.all([this.modelPath(id), this.descriptionPath(id)].map((p) => stat(p).then((s) => s.size, () => 0)));
      // The model first: from then on the id is unknown, whatever happens to its description.
      await unlink(this.modelPath(id));
      await rm(this.descriptionPath(id), { force: true });
      this.used -= sizes[0] + sizes[1];
      return true;
    });
  }

  async list(): Promise<string[]> {
    return (await readdir(this.dir)).filter((n) => n.endsWith('.onnx')).map((n) => n.slice(0, -5)).filter(ModelStore.isId);
  }
}

const kib = (bytes: number): string => `${Math.round(bytes / 1024)} KiB`;

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
