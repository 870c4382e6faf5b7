/**
 * No timer can spin (issue 7, item 4): a deadline beyond what Node's setTimeout can wait
 * (2^31 − 1 ms, about 24.8 days) must not make the timer fire at once, again and again.
 *
 * Topology of the forwarder case: a Forwarder (ROUTER P, XPUB P+1, SUB P+2) and a raw DEALER
 * (routing id starting "ckv1") on P sending KVSETs, answered with KVACKs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { DeadlineTimer } from '../src/deadline-timer.ts';
import { MAX_TTL_SECONDS } from '../src/options.ts';
import { forwarder, waitFor } from './helpers.ts';
import { rawDealer, ZERO_SEQ } from './raw-sockets.ts';

function status(ack: Buffer[]): string | undefined {
  return /(?:^|\n)status=([^\n]*)/.exec(ack[3]!.toString())?.[1];
}

test('a deadline 3e9 ms away does not call back, and the timer does not spin', async (t) => {
  let calls = 0;
  const timer = new DeadlineTimer(() => calls++);
  t.after(() => timer.stop());
  timer.arm(Date.now() + 3e9);
  // A near deadline on another timer: by the time it fires, a spinning one would have woken ~50 times.
  await new Promise<void>((resolve) => new DeadlineTimer(resolve).arm(Date.now() + 50));
  assert.equal(calls, 0, 'not called back before its deadline');
  assert.ok(timer.wakeups <= 1, `woke ${timer.wakeups} times in 50 ms`);
});

test('a far deadline is waited for in steps and called back once, when due', async (t) => {
  // maxDelay 5 ms stands in for 2^31 − 1: a deadline 40 ms away takes several steps.
  let calls = 0;
  const timer = new DeadlineTimer(() => calls++, 5);
  t.after(() => timer.stop());
  // How long the event loop went without running (a loaded machine can stall it past the whole
  // deadline, and then one wake-up is right).
  let longestStall = 0;
  let last = Date.now();
  const ticker = setInterval(() => {
    const now = Date.now();
    longestStall = Math.max(longestStall, now - last);
    last = now;
  }, 1);
  t.after(() => clearInterval(ticker));
  const at = Date.now() + 40;
  timer.arm(at);
  await waitFor('the callback', () => calls > 0, 5000);
  clearInterval(ticker);
  assert.ok(Date.now() >= at, 'not called before the deadline');
  assert.equal(calls, 1);
  assert.ok(timer.wakeups <= 40, `woke ${timer.wakeups} times`);
  assert.ok(timer.wakeups >= 2 || longestStall >= 30, `woke ${timer.wakeups} times, the event loop stalled at most ${longestStall} ms`);
  timer.arm(Number.NaN);
  timer.arm(Infinity);
  assert.equal(calls, 1, 'NaN and Infinity arm nothing');
});

test('a ttl of 3e6 s is accepted and makes no timer overflow; one over a year is rejected', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => void warnings.push(w.name);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));

  const fwd = await forwarder(t, { heartbeatInterval: 20 });
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  const write = async (key: string, ttl: string): Promise<Buffer[]> => {
    await dealer.send([Buffer.from(key), ZERO_SEQ, randomBytes(16), Buffer.from(`enc=msgpack\nttl=${ttl}\n`), Buffer.from([0x01])]);
    return inbox.next(`the KVACK for ${key}`);
  };

  assert.equal(status(await write('far', '3e6')), 'ok');
  const beats = fwd.stats().heartbeats;
  // Five heartbeats: long enough for a spinning timer to fire (and warn) dozens of times.
  await waitFor('five heartbeats', () => fwd.stats().heartbeats >= beats + 5, 5000);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(warnings.filter((w) => w === 'TimeoutOverflowWarning'), [], 'no timer was asked to wait too long');
  assert.equal(fwd.stats().expired, 0);
  assert.equal(fwd.size, 1, 'the key is held');

  const over = await write('too-far', String(MAX_TTL_SECONDS + 1));
  assert.equal(status(over), 'rejected');
  assert.match(over[3]!.toString(), /detail=.*too-far/, 'the detail names the key');
  assert.equal(fwd.size, 1, 'the rejected write is not stored');
});
