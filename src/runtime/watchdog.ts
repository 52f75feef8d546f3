/**
 * A worker process must not outlive the server. The IPC channel's 'disconnect' event would tell
 * the main thread, but the main thread may be blocked inside a native session.run for minutes;
 * so a small thread of its own polls the parent pid and kills this process when the parent is
 * gone (the child is then re-parented, and process.ppid changes). The thread is unref'd, so it
 * never keeps an idle worker alive.
 */
import { Worker } from 'node:worker_threads';

/** How often the watchdog looks at its parent, ms: how long an orphan may run at most. */
export const WATCHDOG_INTERVAL_MS = 250;

// Plain CommonJS run with eval: no file of its own to resolve, no loaders.
const WATCHDOG_SOURCE = `
const { workerData } = require('node:worker_threads');
setInterval(() => {
  if (process.ppid !== workerData.parent) process.kill(workerData.self, 'SIGKILL');
}, workerData.intervalMs);
`;

export function watchParent(intervalMs = WATCHDOG_INTERVAL_MS): Worker {
  const watchdog = new Worker(WATCHDOG_SOURCE, {
    eval: true,
    workerData: { parent: process.ppid, self: process.pid, intervalMs },
    // The parent's loaders and inspector flags are not for this thread.
    execArgv: [],
  });
  watchdog.unref();
  return watchdog;
}
