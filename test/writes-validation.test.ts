/**
 * Item 10 (writes): bad arguments to set/delete reject with a ClonekvError naming what is wrong,
 * never a raw TypeError, and nothing is sent. Topology: an in-process Forwarder on an ephemeral
 * port triple and one Peer.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClonekvError, InvalidOptionError, type Peer } from '../src/index.ts';
import { MAX_DURATION_MS, MAX_TTL_SECONDS } from '../src/options.ts';
import { forwarder, readyPeer } from './helpers.ts';

/** Calls `f` (which must not throw synchronously) and returns what its promise rejects with. */
async function rejection(f: () => Promise<unknown>): Promise<unknown> {
  let p: Promise<unknown>;
  try {
    p = f();
  } catch (err) {
    assert.fail(`threw synchronously instead of rejecting: ${String(err)}`);
  }
  try {
    await p;
  } catch (err) {
    return err;
  }
  return assert.fail('resolved');
}

test('a key that is not a string rejects with CLONEKV_INVALID_KEY', async (t) => {
  const fwd = await forwarder(t);
  const p: Peer = await readyPeer(t, fwd.endpoint);
  const bad: Array<[string, () => Promise<unknown>]> = [
    ['set(123)', () => p.set(123 as unknown as string, 'v')],
    ['set(undefined)', () => p.set(undefined as unknown as string, 'v')],
    ['set(null)', () => p.set(null as unknown as string, 'v')],
    ['delete({})', () => p.delete({} as unknown as string)],
    ['delete(Symbol)', () => p.delete(Symbol('k') as unknown as string)],
  ];
  for (const [what, f] of bad) {
    const err = await rejection(f);
    assert.ok(err instanceof ClonekvError, `${what}: ${String(err)}`);
    assert.equal(err.code, 'CLONEKV_INVALID_KEY', what);
  }
  assert.equal(p.stats().writes, 0, 'nothing was sent');
});

test('a timeout that is NaN, negative, fractional, too long or not a number is refused, naming timeout', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  for (const timeout of [Number.NaN, -1, 1.5, MAX_DURATION_MS + 1, Infinity, '100' as unknown as number]) {
    for (const [what, f] of [
      ['set', () => p.set('k', 1, { timeout })],
      ['delete', () => p.delete('k', { timeout })],
    ] as const) {
      const err = await rejection(f);
      assert.ok(err instanceof InvalidOptionError, `${what} timeout ${String(timeout)}: ${String(err)}`);
      assert.equal(err.option, 'timeout');
    }
  }
  for (const options of [null, 'fast', 5]) {
    const err = await rejection(() => p.set('k', 1, options as never));
    assert.ok(err instanceof InvalidOptionError, `options ${String(options)}: ${String(err)}`);
    assert.equal(err.option, 'options');
  }
  // The longest allowed one is accepted.
  assert.ok((await p.set('k', 1, { timeout: MAX_DURATION_MS })) > 0);
});

test('a ttl over the longest ttl is refused, naming ttl', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  for (const ttl of [MAX_TTL_SECONDS + 1, 3e9, Infinity]) {
    const err = await rejection(() => p.set('k', 1, { ttl }));
    assert.ok(err instanceof InvalidOptionError, `ttl ${ttl}: ${String(err)}`);
    assert.equal(err.option, 'ttl');
  }
  assert.ok((await p.set('k', 1, { ttl: MAX_TTL_SECONDS })) > 0);
});
