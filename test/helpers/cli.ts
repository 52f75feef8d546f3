import { spawnSync } from 'node:child_process';
import { main } from '../../dist/cli/program.js';

export const BIN = new URL('../../dist/cli/main.js', import.meta.url).pathname;

/** Run the command line in process, capturing its output. */
export async function cli(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (t) => (stdout += `${t}\n`), stderr: (t) => (stderr += `${t}\n`) });
  return { code, stdout, stderr };
}

/** Run the real executable as a child process. */
export function spawnCli(...argv: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...argv], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
