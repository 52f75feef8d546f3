#!/usr/bin/env node
import { main } from './program.js';

const line = (stream: NodeJS.WriteStream) => (text: string) => stream.write(text.endsWith('\n') ? text : `${text}\n`);
process.exitCode = await main(process.argv.slice(2), { stdout: line(process.stdout), stderr: line(process.stderr) });
