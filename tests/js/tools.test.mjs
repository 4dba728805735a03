// tools.test.mjs - tool calling through the official OpenAI SDK (npm `openai`): kvserve serves
// kjv-tiny with Qwen2.5's real chat template (Hermes <tool_call> format, given by
// model.chat_template_file), so tools are rendered into the prompt by the template and the
// model's calls are parsed back. kjv-tiny knows no tools: tool_choice "required" or a named
// function holds its output to a call whose arguments follow the tool's JSON Schema, which
// Ajv then checks independently. Round trips, streamed and not: the call comes back with an
// id, the tool's result goes in as a `tool` message, and the model answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';

import Ajv from 'ajv';

import { startServer, SRC } from './server.mjs';

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', minLength: 1, maxLength: 12 },
        days: { type: 'integer', minimum: 1, maximum: 7 },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      },
      required: ['city', 'days'],
    },
  },
};
const ADD = {
  type: 'function',
  function: {
    name: 'add',
    description: 'Add two integers',
    parameters: {
      type: 'object',
      properties: { a: { type: 'integer', minimum: -99, maximum: 99 },
                    b: { type: 'integer', minimum: -99, maximum: 99 } },
      required: ['a', 'b'],
    },
  },
};
const TOOLS = [WEATHER, ADD];
const ajv = new Ajv({ strict: false });
const validators = Object.fromEntries(TOOLS.map((t) => [t.function.name,
                                                        ajv.compile(t.function.parameters)]));
const ID = /^call_[A-Za-z0-9]{24}$/;
const USER = { role: 'user', content: 'What is the weather in Paris for three days?' };

let srv;
before(async () => {
  const tmpl = path.join(SRC, 'tests', 'data', 'templates', 'Qwen-Qwen2.5-7B-Instruct.jinja');
  srv = await startServer(`[model]\nchat_template_file = "${tmpl}"\n`);
});
after(async () => { await srv.stop(); });

function checkCall(call, name) {
  assert.match(call.id, ID);
  assert.equal(call.type, 'function');
  if (name) assert.equal(call.function.name, name);
  const validate = validators[call.function.name];
  assert.ok(validate, `unknown function ${call.function.name}`);
  const args = JSON.parse(call.function.arguments);
  assert.ok(validate(args), JSON.stringify(validate.errors) + ' ' + call.function.arguments);
  return args;
}

test('tool-call round trip, not streamed', async () => {
  const r1 = await srv.client.chat.completions.create({
    model: 'kjv-tiny', messages: [USER], tools: TOOLS, tool_choice: 'required',
    max_tokens: 200, seed: 1,
  });
  const c1 = r1.choices[0];
  assert.equal(c1.finish_reason, 'tool_calls');
  assert.equal(c1.message.role, 'assistant');
  assert.equal(c1.message.tool_calls.length, 1);
  const call = c1.message.tool_calls[0];
  checkCall(call);
  const r2 = await srv.client.chat.completions.create({
    model: 'kjv-tiny', tools: TOOLS, max_tokens: 8, seed: 2,
    messages: [USER, c1.message,
               { role: 'tool', tool_call_id: call.id, content: JSON.stringify({ temperature: 21 }) }],
  });
  const c2 = r2.choices[0];
  assert.equal(typeof c2.message.content, 'string');
  assert.ok(['stop', 'length'].includes(c2.finish_reason));
  assert.equal(c2.message.tool_calls, undefined);
  // the template rendered the call and its result: the second prompt is longer
  assert.ok(r2.usage.prompt_tokens > r1.usage.prompt_tokens + 10);
});

test('tool-call round trip, streamed, named function', async () => {
  const stream = await srv.client.chat.completions.create({
    model: 'kjv-tiny', messages: [{ role: 'user', content: 'Add 2 and 3.' }], tools: TOOLS,
    tool_choice: { type: 'function', function: { name: 'add' } }, max_tokens: 200, seed: 3,
    stream: true,
  });
  const calls = [];
  let finish = null, role = null, n = 0;
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    n++;
    if (ch.delta.role) role = ch.delta.role;
    for (const d of ch.delta.tool_calls || []) { // OpenAI's delta shape
      if (!calls[d.index]) {
        assert.ok(d.id && d.function && d.function.name !== undefined, 'first delta names it');
        calls[d.index] = { id: d.id, type: d.type, function: { name: d.function.name,
                                                                arguments: '' } };
      }
      if (d.function && d.function.arguments) calls[d.index].function.arguments +=
        d.function.arguments;
    }
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.ok(n >= 3);
  assert.equal(finish, 'tool_calls');
  assert.equal(calls.length, 1);
  const args = checkCall(calls[0], 'add');
  const back = await srv.client.chat.completions.create({
    model: 'kjv-tiny', tools: TOOLS, max_tokens: 6, seed: 4, stream: true,
    messages: [{ role: 'user', content: 'Add 2 and 3.' },
               { role: 'assistant', content: null, tool_calls: calls },
               { role: 'tool', tool_call_id: calls[0].id, content: String(args.a + args.b) }],
  });
  let text = '', fin = null;
  for await (const chunk of back) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    text += ch.delta.content || '';
    assert.equal(ch.delta.tool_calls, undefined);
    if (ch.finish_reason) fin = ch.finish_reason;
  }
  assert.ok(['stop', 'length'].includes(fin));
  assert.equal(typeof text, 'string');
});

test('tool_choice none and bad tool requests', async () => {
  const r = await srv.client.chat.completions.create({
    model: 'kjv-tiny', messages: [USER], tools: TOOLS, tool_choice: 'none', max_tokens: 5,
  });
  assert.equal(r.choices[0].message.tool_calls, undefined);
  assert.equal(typeof r.choices[0].message.content, 'string');
  for (const bad of [
    { tool_choice: { type: 'function', function: { name: 'nope' } }, tools: TOOLS },
    { tool_choice: 'required' },
    { tools: [{ type: 'function', function: { description: 'no name' } }] },
    { tools: TOOLS, tool_choice: 'sometimes' },
  ]) {
    await assert.rejects(
      srv.client.chat.completions.create({ model: 'kjv-tiny', messages: [USER], max_tokens: 5,
                                           ...bad }),
      (e) => e.status === 400 && /tool/.test(e.message));
  }
  const ok = await srv.client.chat.completions.create({ model: 'kjv-tiny', messages: [USER],
                                                        max_tokens: 3 });
  assert.equal(ok.choices.length, 1); // still serving
});
