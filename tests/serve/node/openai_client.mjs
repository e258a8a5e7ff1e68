// The official OpenAI SDK for JavaScript (npm `openai`) against an ssm server, as a user's program
// talks to it: a completion, a chat completion whole and streamed (the same text), a stream the
// client aborts mid-way (the server must let its sequence go and keep serving), and an error the SDK
// raises as its own BadRequestError. Run by tests/serve/test_openai_client.cpp; exits 0 when all
// hold, else prints what did not.
//   node openai_client.mjs --base-url http://127.0.0.1:PORT/v1 --api-key KEY --model NAME --modules DIR
// DIR is the node_modules' parent folder holding `openai` (scripts/setup-node-deps.sh installs it).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const args = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const name of ['base-url', 'api-key', 'model', 'modules']) assert.ok(args[name], `--${name} is required`);

const OpenAI = createRequire(path.resolve(args.modules, 'package.json'))('openai');
const client = new OpenAI({ baseURL: args['base-url'], apiKey: args['api-key'], maxRetries: 0, timeout: 60_000 });
const model = args.model;

async function slotsInUse() {
  const res = await fetch(`${args['base-url'].replace(/\/v1$/, '')}/metrics`, {
    headers: { Authorization: `Bearer ${args['api-key']}` },
  });
  assert.equal(res.status, 200);
  const line = (await res.text()).split('\n').find((l) => l.startsWith('ssm_slots_in_use '));
  return Number(line.split(' ')[1]);
}

async function completion() {
  const response = await client.completions.create({
    model, prompt: 'Hello', max_tokens: 5, temperature: 0, ignore_eos: true,
  });
  assert.equal(response.object, 'text_completion');
  assert.equal(response.choices.length, 1);
  assert.equal(typeof response.choices[0].text, 'string');
  assert.equal(response.choices[0].finish_reason, 'length');
  assert.deepEqual(
    [response.usage.prompt_tokens, response.usage.completion_tokens, response.usage.total_tokens], [5, 5, 10]);
}

async function streamedChat() {
  const request = {
    model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }],
    max_tokens: 12, temperature: 0, ignore_eos: true,
  };
  const whole = await client.chat.completions.create(request);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      content += choice.delta?.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.ok(chunks >= 3, `only ${chunks} chunks`);
  assert.equal(content, whole.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage?.completion_tokens, 12);
}

async function cancelledStream() {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Tell me everything.' }], max_tokens: 100000, ignore_eos: true, stream: true,
  });
  let seen = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) seen += 1;
    if (seen === 3) break;  // leaving the loop aborts the request
  }
  assert.equal(seen, 3);
  stream.controller.abort();
  // The server lets the sequence go and goes on serving.
  let busy = await slotsInUse();
  for (let i = 0; i < 100 && busy !== 0; ++i) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    busy = await slotsInUse();
  }
  assert.equal(busy, 0, 'the aborted stream still holds a slot');
  await completion();
}

async function errors() {
  await assert.rejects(
    client.completions.create({ model, prompt: 'Hi', max_tokens: 2, temperature: 5 }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.param === 'temperature',
  );
  const wrongKey = new OpenAI({ baseURL: args['base-url'], apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(), (err) => err instanceof OpenAI.AuthenticationError);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [model]);
}

for (const [name, check] of Object.entries({ completion, streamedChat, cancelledStream, errors })) {
  try {
    await check();
    console.log(`ok ${name}`);
  } catch (err) {
    console.error(`FAILED ${name}: ${err?.stack ?? err}`);
    process.exit(1);
  }
}
