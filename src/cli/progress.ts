/**
 * A one-line progress bar on stderr, only when stderr is a terminal: piped or redirected output
 * (CI logs, `--json > file`) stays clean. Fifteen lines do not warrant a dependency.
 */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export function progressBar(stream: ProgressStream = process.stderr): ((done: number, total: number, stage: string) => void) | undefined {
  if (!stream.isTTY) return undefined;
  const width = 30;
  return (done, total, stage) => {
    const filled = total > 0 ? Math.round((width * done) / total) : width;
    stream.write(`\r${stage.padEnd(13)} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total}`);
    if (done >= total) stream.write('\n');
  };
}
