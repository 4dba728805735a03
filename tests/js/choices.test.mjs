// choices.test.mjs - n > 1 through the official OpenAI SDK: n = 4 returns 4 choices (streamed
// by index, each with its own finish reason), the prompt is prefilled once and the 4
// sequences share its KV blocks (GET /v1/kv while they run: blocks in use = the prompt's
// shared full blocks + one private tail per choice, far below 4 separate copies; the prefix
// cache served 3 followers), greedy choices over the shared blocks equal the single greedy
// answer, and n = 0 or 17 is a 400 after which the server keeps serving.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import { startServer, SHARED } from './server.mjs';

const TEXT = fs.readFileSync(path.join(SHARED, 'models', 'kjv-tiny', 'heldout-public.txt'),
                             'utf8');
const BLOCK = 64;          // kvcache.block_tokens default
const TABLES = 4 * 2;      // kjv-tiny: 4 layers x 2 KV heads, one block each per 64 tokens

let srv;
before(async () => { srv = await startServer(); });
after(async () => { await srv.stop(); });

async function kv() {
  return (await fetch(`${srv.url}/v1/kv`)).json();
}

test('n=4: four choices over one prefilled prompt, KV = one prompt + 4 tails', async () => {
  const messages = [{ role: 'user', content: TEXT.slice(0, 1200) }];
  const stream = await srv.client.chat.completions.create({
    model: 'kjv-tiny', messages, n: 4, max_tokens: 120, seed: 7, temperature: 1,
    logit_bias: { 2: -100 }, // no EOS: all four stay alive while /v1/kv is read
    stream: true, stream_options: { include_usage: true },
  });
  const seen = new Set(), finish = {}, texts = ['', '', '', ''];
  let snap = null, usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      texts[ch.index] += ch.delta.content || '';
      if (ch.delta.content) seen.add(ch.index);
      if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
    }
    if (seen.size === 4 && !snap) snap = await kv();
  }
  assert.deepEqual(Object.keys(finish).sort(), ['0', '1', '2', '3']);
  for (const i of [0, 1, 2, 3]) assert.equal(finish[i], 'length');
  assert.equal(new Set(texts).size, 4, 'seed + index gives each choice its own sample');
  assert.equal(usage.completion_tokens, 4 * 120);
  const P = usage.prompt_tokens, full = Math.floor(P / BLOCK), rem = P % BLOCK;
  assert.ok(full >= 4, `prompt of ${P} tokens spans several blocks`);
  assert.equal(snap.sequences.length, 4);
  // every block in use is either the cached prompt (the shared full blocks) or a tail
  const cached = snap.prefix_cache.bytes / snap.block_bytes;
  assert.equal(cached, full * TABLES);
  let lo = cached, hi = cached;
  for (const s of snap.sequences) { // the snapshot may lag the pool by a step
    lo += TABLES * Math.ceil((rem + s.generated_tokens) / BLOCK);
    hi += TABLES * Math.ceil((rem + s.generated_tokens + 2) / BLOCK);
  }
  assert.ok(snap.blocks_used >= lo && snap.blocks_used <= hi,
            `blocks_used ${snap.blocks_used} not in [${lo}, ${hi}]`);
  const separate = 4 * TABLES * Math.ceil(P / BLOCK);
  assert.ok(snap.blocks_used < 0.6 * separate, `${snap.blocks_used} vs ${separate} unshared`);
  // the prompt was computed once: each of the 3 followers took its full blocks from the cache
  assert.equal(snap.prefix_cache.hit_tokens, 3 * full * BLOCK);
});

test('greedy choices over shared blocks equal the single greedy answer', async () => {
  const messages = [{ role: 'user', content: TEXT.slice(2000, 2900) }];
  const one = await srv.client.chat.completions.create({ model: 'kjv-tiny', messages,
                                                         temperature: 0, max_tokens: 24 });
  const two = await srv.client.chat.completions.create({ model: 'kjv-tiny', messages, n: 3,
                                                         temperature: 0, max_tokens: 24,
                                                         logprobs: true });
  assert.equal(two.choices.length, 3);
  for (const [i, c] of two.choices.entries()) {
    assert.equal(c.index, i);
    assert.equal(c.message.content, one.choices[0].message.content);
    assert.equal(c.finish_reason, one.choices[0].finish_reason);
    assert.equal(c.logprobs.content.length, one.usage.completion_tokens);
  }
  assert.equal(two.usage.completion_tokens, 3 * one.usage.completion_tokens);
  assert.equal(two.usage.prompt_tokens, one.usage.prompt_tokens);
});

test('n 0 or 17 is a 400 and the server keeps serving', async () => {
  for (const n of [0, 17]) {
    await assert.rejects(
      srv.client.chat.completions.create({ model: 'kjv-tiny', n, max_tokens: 2,
                                           messages: [{ role: 'user', content: 'x' }] }),
      (e) => e.status === 400 && /'n' must be an integer in 1\.\.16/.test(e.message));
  }
  const r = await srv.client.completions.create({ model: 'kjv-tiny', prompt: 'And God said',
                                                  n: 2, max_tokens: 4, seed: 1 });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
});
