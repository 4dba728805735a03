// server.mjs - starts kvserve for a test file: a free 127.0.0.1 port, a private temp dir
// with the config, kjv-tiny from $KVSERVE_SHARED, and an OpenAI SDK client pointed at it.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import OpenAI from 'openai';

export const BIN = process.env.KVSERVE_BIN || path.resolve('../../build/kvserve');
export const SHARED = process.env.KVSERVE_SHARED || path.resolve('../../../shared');
export const SRC = process.env.KVSERVE_SRC || path.resolve('../..');
export const MODEL = path.join(SHARED, 'models', 'kjv-tiny', 'kjv-tiny-f16.gguf');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// extraToml: more config (e.g. a [model] table). Returns {client, url, stop()}.
export async function startServer(extraToml = '') {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvserve-js-'));
  const cfg = path.join(dir, 'c.toml');
  fs.writeFileSync(cfg, `[server]\nport = ${port}\n${extraToml}`);
  const log = path.join(dir, 'log');
  const err = fs.openSync(log, 'w');
  const proc = spawn(BIN, ['serve', '--config', cfg, '--model', MODEL, '--threads', '1'],
                     { stdio: ['ignore', 'ignore', err] });
  const url = `http://127.0.0.1:${port}`;
  let healthy = false;
  for (let i = 0; i < 600 && !healthy && proc.exitCode === null; i++) {
    try {
      healthy = (await fetch(`${url}/health`)).status === 200;
    } catch { /* not listening yet */ }
    if (!healthy) await new Promise((r) => setTimeout(r, 100));
  }
  if (!healthy) throw new Error('kvserve did not become healthy: ' + fs.readFileSync(log, 'utf8'));
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  async function stop() {
    if (proc.exitCode === null) {
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await done;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { client, url, stop };
}
