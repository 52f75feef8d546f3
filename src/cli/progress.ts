/**
 * Progress of a long command on stderr: a one-line bar on a terminal, one plain line every few
 * seconds otherwise (CI logs stay short and `--json > file` stays clean: stdout is untouched), and
 * nothing with --quiet. Forty lines do not warrant a dependency.
 */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export type ProgressFn = (done: number, total: number, stage: string) => void;

export function progressBar(stream: ProgressStream = process.stderr): ProgressFn | undefined {
  if (!stream.isTTY) return undefined;
  const width = 30;
  let last = '';
  return (done, total, stage) => {
    // A job polled twice between chunks reports the same point again: draw it once.
    const key = `${stage}:${done}/${total}`;
    if (key === last) return;
    last = key;
    const filled = total > 0 ? Math.min(width, Math.round((width * done) / total)) : width;
    stream.write(`\r${stage.padEnd(13)} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total}`);
    if (done >= total) stream.write('\n');
  };
}

export interface ReporterOptions {
  quiet?: boolean;
  stream?: ProgressStream;
  /** Milliseconds between two plain lines (not a terminal). */
  everyMs?: number;
  now?: () => number;
}

/** The bar on a terminal; elsewhere a line such as `penalty 3/8 chunks (12 s)` every `everyMs`. */
export function progressReporter(options: ReporterOptions = {}): ProgressFn | undefined {
  if (options.quiet) return undefined;
  const stream = options.stream ?? process.stderr;
  if (stream.isTTY) return progressBar(stream);
  const now = options.now ?? Date.now;
  const every = options.everyMs ?? 5000;
  const started = now();
  let last = started;
  return (done, total, stage) => {
    const t = now();
    if (t - last < every) return;
    last = t;
    stream.write(`${stage} ${done}/${total} chunks (${Math.round((t - started) / 1000)} s)\n`);
  };
}
