// structured.test.mjs - the official OpenAI SDK (npm `openai`) against kvserve on kjv-tiny:
// 20 json_schema requests, each answer parsed and validated by Ajv (an independent JSON
// Schema validator) against the schema that constrained it; one streamed through the SDK;
// a bad schema surfaces as the SDK's 400 error.
//
// Starts its own server ($KVSERVE_BIN, model from $KVSERVE_SHARED) on a free port with a
// private temp dir. Formats are checked with our own validators (Ajv ships none): a date
// must exist in the calendar, times and uuids must have their RFC shapes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import OpenAI from 'openai';
import Ajv from 'ajv';

// meson sets both (tests/meson.build); there is no fallback: without them nothing is tested.
const BIN = process.env.KVSERVE_BIN;
const SHARED = process.env.KVSERVE_SHARED;
if (!BIN || !SHARED || !fs.existsSync(SHARED)) {
  console.error('KVSERVE_BIN and KVSERVE_SHARED must be set: run the tests with `meson test`');
  process.exit(1);
}
const MODEL = path.join(SHARED, 'models', 'kjv-tiny', 'kjv-tiny-f16.gguf');

let server, client, dir, log;

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

async function waitHealthy(port) {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/health`);
      if (r.status === 200) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('kvserve did not become healthy: ' + fs.readFileSync(log, 'utf8'));
}

before(async () => {
  const port = await freePort();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvserve-js-'));
  const cfg = path.join(dir, 'c.toml');
  fs.writeFileSync(cfg, `[server]\nport = ${port}\n`);
  log = path.join(dir, 'log');
  const err = fs.openSync(log, 'w');
  server = spawn(BIN, ['serve', '--config', cfg, '--model', MODEL, '--threads', '1'],
                 { stdio: ['ignore', 'ignore', err] });
  await waitHealthy(port);
  client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });
});

after(async () => {
  if (server && server.exitCode === null) {
    const done = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await done;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

function validDate(s) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s);
  if (!m) return false;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return d.getUTCFullYear() === +m[1] && d.getUTCMonth() === +m[2] - 1 && d.getUTCDate() === +m[3];
}
function validTime(s) {
  const m = /^(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-](\d{2}):(\d{2}))$/i.exec(s);
  return !!m && +m[1] < 24 && +m[2] < 60 && +m[3] < 60 && (!m[6] || (+m[6] < 24 && +m[7] < 60));
}
function makeAjv() {
  const ajv = new Ajv({ strict: true, allErrors: true });
  ajv.addFormat('date', validDate);
  ajv.addFormat('time', validTime);
  ajv.addFormat('date-time', (s) => {
    const i = s.search(/[Tt]/);
    return i === 10 && validDate(s.slice(0, 10)) && validTime(s.slice(11));
  });
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  return ajv;
}

const str = (max, min = 0) => ({ type: 'string', minLength: min, maxLength: max });
const obj = (properties, required = Object.keys(properties), extra = {}) =>
  ({ type: 'object', properties, required, additionalProperties: false, ...extra });

const SCHEMAS = {
  person: obj({ name: str(12, 1), age: { type: 'integer', minimum: 18, maximum: 99 } }),
  scores: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 100 },
            minItems: 2, maxItems: 4 },
  color: { type: 'string', enum: ['red', 'green', 'blue'] },
  constant: { const: { version: 2, tag: 'kjv' } },
  optional_only: obj({ a: { type: 'boolean' }, b: { type: 'null' }, c: str(4) }, []),
  nested: obj({ book: obj({ title: str(10), chapters: { type: 'integer', minimum: 1,
                                                        maximum: 150 } }),
                open: { type: 'boolean' } }),
  verses: { type: 'array', maxItems: 3,
            items: obj({ chapter: { type: 'integer', minimum: 1, maximum: 50 },
                         verse: { type: 'integer', minimum: 1, maximum: 176 } }) },
  refs: { $defs: { point: obj({ x: { type: 'integer', minimum: -9, maximum: 9 },
                                y: { type: 'integer', minimum: -9, maximum: 9 } }) },
          ...obj({ from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } }) },
  any_of: { anyOf: [{ type: 'integer', minimum: 0, maximum: 9 }, str(6)] },
  one_of: obj({ flag: { oneOf: [{ type: 'boolean' }, { type: 'null' }] } }),
  date: obj({ day: { type: 'string', format: 'date' } }),
  date_time: obj({ at: { type: 'string', format: 'date-time' } }),
  uuid: obj({ id: { type: 'string', format: 'uuid' } }),
  time: obj({ t: { type: 'string', format: 'time' } }),
  probability: obj({ p: { type: 'number', minimum: 0, maximum: 1 } }),
  negative: obj({ n: { type: 'integer', exclusiveMinimum: -50, exclusiveMaximum: -10 } }),
  nullable: obj({ note: { type: ['string', 'null'], maxLength: 8 } }),
  mixed_enum: obj({ v: { enum: [1, 2.5, 'three', null, true] }, w: { enum: ['x', 'y'] } }),
  lengths: obj({ code: str(6, 3), words: { type: 'array', items: str(5, 1), minItems: 1,
                                           maxItems: 2 } }),
  some_required: obj({ id: { type: 'integer', minimum: 1, maximum: 999 }, label: str(8),
                       done: { type: 'boolean' } }, ['id']),
};

test('20 json_schema responses through the OpenAI SDK validate with Ajv', async () => {
  const ajv = makeAjv();
  assert.equal(Object.keys(SCHEMAS).length, 20);
  for (const [name, schema] of Object.entries(SCHEMAS)) {
    const validate = ajv.compile(schema);
    const r = await client.chat.completions.create({
      model: 'kjv-tiny',
      messages: [{ role: 'user', content: `Reply with the ${name} as JSON.` }],
      response_format: { type: 'json_schema', json_schema: { name, schema, strict: true } },
      temperature: 0,
      max_tokens: 400,
    });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'stop', `${name}: the grammar ended the answer`);
    const value = JSON.parse(c.message.content);
    assert.ok(validate(value), `${name}: ${c.message.content} -> ${ajv.errorsText(validate.errors)}`);
  }
});

test('a streamed json_schema response through the SDK validates', async () => {
  const schema = SCHEMAS.nested;
  const stream = await client.chat.completions.create({
    model: 'kjv-tiny',
    messages: [{ role: 'user', content: 'A book as JSON.' }],
    response_format: { type: 'json_schema', json_schema: { name: 'nested', schema } },
    temperature: 0.8,
    seed: 3,
    max_tokens: 400,
    stream: true,
  });
  let text = '', finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      finish = c.finish_reason ?? finish;
    }
  }
  assert.equal(finish, 'stop');
  const validate = makeAjv().compile(schema);
  assert.ok(validate(JSON.parse(text)), `${text} -> ${JSON.stringify(validate.errors)}`);
});

test('an unsupported keyword is a 400 naming its JSON pointer', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'kjv-tiny',
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: {
        name: 'bad', schema: obj({ s: { type: 'string', pattern: '^a+$' } }) } },
    }),
    (e) => e.status === 400 && /\/properties\/s\/pattern/.test(e.message),
  );
});
