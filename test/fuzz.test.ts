/**
 * Hostile input, the CI form (issue 10): 20,000 random and mutated messages over every socket of a
 * primary/backup pair with a write policy (ROUTER, collector, XPUB subscriptions, both state
 * ports) and a verifying peer's subscription, while a writer with a policy identity keeps
 * writing. See test/fuzz-harness.ts for what is sent and checked, and the README (Security,
 * Hostile input) for the accounting. The long form: `npm run fuzz -- --messages=N --seed=S`.
 *
 * The seed is printed; a failing seed is replayed with
 * `FUZZ_SEED=S npx tsx --test --test-timeout=60000 test/fuzz.test.ts` (FUZZ_MESSAGES=N for more).
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { test } from 'node:test';
import { runFuzz } from './fuzz-harness.ts';

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(2 ** 31);
const messages = process.env.FUZZ_MESSAGES ? Number(process.env.FUZZ_MESSAGES) : 20_000;

test(`fuzz: ${messages} hostile messages change no map, stop nothing, are all counted (seed ${seed})`, async (t) => {
  const report = await runFuzz({ messages, seed, hugeFrameBytes: 256 * 1024, log: (line) => t.diagnostic(line) });
  t.diagnostic(`fuzz report: ${JSON.stringify(report)}`);
  assert.deepEqual(report.problems, [], `seed ${seed} (replay: FUZZ_SEED=${seed} npx tsx --test --test-timeout=60000 test/fuzz.test.ts)`);
  assert.ok(report.legitimateWrites > 0, 'the legitimate writer made progress during the fuzzing');
  assert.equal(report.sent.router + report.sent.collector + report.sent.subscriptions + report.sent.state + report.sent.peer, messages);
});
