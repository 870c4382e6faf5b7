/**
 * A full disk made at the storage boundary (issue 8), so that it runs everywhere: while
 * `storageFaults.writeFault` throws an ENOSPC error inside the durable store's transaction (after
 * the group's records were put, so LMDB must abort them), the durable forwarder is as full as a
 * real full disk makes it. The promises, in `sync` and in `async` durability:
 *
 * - the writer's write rejects with `CLONEKV_REJECTED` and a message naming the key, the full
 *   disk and its directory (the README's wording);
 * - nothing is half-applied: the forwarder's map, a live peer, a new peer's snapshot and the
 *   disk after a restart hold exactly the acknowledged writes; the sequence neither skips nor
 *   reuses a number a peer saw;
 * - reads and snapshots go on: a new peer joins during the fault;
 * - writes succeed again once the fault clears.
 *
 * test/durable-enospc.test.ts makes the same promises on a real full disk (a tmpfs, root only).
 *
 * Topology: an in-process durable Forwarder on an ephemeral port triple, a data directory in the
 * system's temp directory, in-process Peers.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { Forwarder, type Peer } from '../src/index.ts';
import { PRESENCE_PREFIX } from '../src/protocol/commands.ts';
import { storageFaults } from '../src/store/durable-store.ts';
import { contents, dataDir, readyPeer, waitFor, waitForReading, within } from './helpers.ts';

/** Makes every commit to disk fail as a full disk does until the test ends or `clear()` is called. */
function diskFull(t: TestContext): { clear(): void } {
  storageFaults.writeFault = () => {
    throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  };
  const clear = (): void => void (storageFaults.writeFault = undefined);
  t.after(clear);
  return { clear };
}

/** A peer's map without presence keys (`$peers/...`), which peers joining and leaving write. */
function data(p: Peer): Record<string, unknown> {
  return Object.fromEntries(Object.entries(contents(p)).filter(([k]) => !k.startsWith('$peers/')));
}

type WriteError = Error & { code?: string };

/** Settles a write: its sequence, or its error. */
function attempt(p: Promise<number>): Promise<number | WriteError> {
  return p.then((seq) => seq, (err: WriteError) => err);
}

/**
 * Watches the live peers from now on (between them, they must hold every key: `watcher` the data,
 * `presence` the `$peers/` keys that other peers hide). `check(upTo)` fails the test if one
 * resynced (a refused write must never make a peer start over), or if the sequences they were
 * sent are not every one after the first, up to `upTo`, once each: a refused write's sequence is
 * never published, and none is skipped.
 */
function sequenceWatch(watcher: Peer, presence: Peer): (upTo: number) => void {
  const reasons: string[] = [];
  const seen: number[] = [];
  for (const p of [watcher, presence]) {
    p.on('resync', ({ reason }) => reasons.push(String(reason)));
    p.on('update', (e) => void seen.push(e.version));
  }
  return (upTo) => {
    assert.deepEqual(reasons, [], 'a live peer resynced');
    seen.sort((a, b) => a - b);
    const first = seen[0] ?? 0;
    assert.deepEqual(seen, Array.from({ length: upTo - first + 1 }, (_, i) => first + i), 'the sequences the live peers were sent');
  };
}

/** The writer's rejection: `forwarder at ... refused the write to "KEY": "KEY" not stored: disk full at DIR: ...`. */
const REFUSED = /refused the write to "([^"]+)": "\1" not stored: disk full at .+: the write was not stored \(free some space; writes succeed again once there is room\)$/;

test('sync: a write the disk refuses rejects naming the key, is never seen anywhere, and the next write takes its sequence once the fault clears', async (t) => {
  const dir = dataDir(t);
  let fwd = await Forwarder.start({ port: 0, dataDir: dir, heartbeatInterval: 100 });
  t.after(() => fwd.close());
  const writer = await readyPeer(t, fwd.endpoint, { presence: false });
  const watcher = await readyPeer(t, fwd.endpoint, { presence: false });
  const watched = sequenceWatch(watcher, await readyPeer(t, fwd.endpoint, { presence: false, subtree: PRESENCE_PREFIX }));
  const before = await writer.set('before', 'full');
  await writer.set('d/0', 'kept');
  await waitFor('the watcher has the writes before the fault', () => watcher.has('d/0'));
  const expected = { before: 'full', 'd/0': 'kept' };

  const fault = diskFull(t);
  // Ten at once (so several share one failed commit), plus a delete: none may take effect.
  const results = await Promise.all([...Array.from({ length: 10 }, (_, i) => attempt(writer.set(`w/${i}`, i))), attempt(writer.delete('d/0'))]);
  for (const r of results) {
    assert.ok(r instanceof Error, `a write was acknowledged during the fault: ${String(r)}`);
    assert.equal(r.code, 'CLONEKV_REJECTED', r.message);
    assert.match(r.message, REFUSED);
    assert.ok(r.message.includes(dir), `the message names the directory: ${r.message}`);
  }
  assert.equal(REFUSED.exec(String((results[3] as WriteError).message))?.[1], 'w/3', 'each rejection names its own key');
  assert.equal(REFUSED.exec(String((results[10] as WriteError).message))?.[1], 'd/0');

  // Nothing half-applied: the forwarder's map and sequence, and the live peer.
  assert.equal(fwd.sequence, before + 1, 'the sequence is back where the disk is');
  assert.equal(fwd.size, 2, 'the forwarder map holds no refused write and lost no key');
  // Reads and snapshots go on: a peer joins (with presence, whose own write the disk refuses too).
  const joiner = await readyPeer(t, fwd.endpoint);
  assert.deepEqual(data(joiner), expected, 'the snapshot served during the fault');
  assert.deepEqual(data(watcher), expected, 'the live peer');
  assert.equal(writer.get('d/0'), 'kept', 'reads at the writer go on');

  // The fault clears: writes succeed, the first one taking the sequence after the last stored.
  fault.clear();
  await within('a write once the fault clears', writer.set('after', 'room'));
  await writer.set('w/3', 3);
  await waitFor('everyone has the writes after the fault', () => watcher.has('w/3') && joiner.has('w/3'));
  const final = { ...expected, after: 'room', 'w/3': 3 };
  assert.deepEqual(data(watcher), final);
  assert.deepEqual(data(joiner), final);
  watched(fwd.sequence);

  // And the disk holds what was acknowledged, nothing refused.
  const { port } = fwd;
  await fwd.close();
  fwd = await Forwarder.start({ port, dataDir: dir, heartbeatInterval: 100 });
  const check = await readyPeer(t, fwd.endpoint, { presence: false });
  assert.deepEqual(data(check), final);
});

test('async: once a commit fails, new writes are refused naming the key until the kept group is on disk; what was acknowledged is kept', async (t) => {
  const dir = dataDir(t);
  let fwd = await Forwarder.start({ port: 0, dataDir: dir, heartbeatInterval: 100, durability: 'async' });
  t.after(() => fwd.close());
  const writer = await readyPeer(t, fwd.endpoint, { presence: false });
  const watcher = await readyPeer(t, fwd.endpoint, { presence: false });
  const watched = sequenceWatch(watcher, await readyPeer(t, fwd.endpoint, { presence: false, subtree: PRESENCE_PREFIX }));
  await writer.set('before', 'full');

  const fault = diskFull(t);
  // In async mode a write is acknowledged before its commit: the first ones during the fault are
  // (their group is kept and written again later); once the commit failed, writes are refused.
  const acked: Record<string, unknown> = {};
  let lastAcked = 0;
  let refused: WriteError | undefined;
  for (let i = 0; i < 100 && refused === undefined; i++) {
    const r = await attempt(writer.set(`w/${i}`, i));
    if (r instanceof Error) refused = r;
    else ((acked[`w/${i}`] = i), (lastAcked = r));
  }
  assert.ok(refused, 'no write was refused during the fault');
  assert.equal(refused.code, 'CLONEKV_REJECTED', refused.message);
  assert.match(refused.message, REFUSED);
  assert.ok(refused.message.includes(dir), refused.message);
  const refusedKey = REFUSED.exec(refused.message)?.[1];
  assert.ok(refusedKey !== undefined && !(refusedKey in acked));
  assert.ok(Object.keys(acked).length > 0, 'the first write of the fault was acknowledged (published before its commit)');

  // Nothing half-applied: what was acknowledged is everywhere, the refused write nowhere.
  const expected = { before: 'full', ...acked };
  assert.equal(fwd.sequence, lastAcked, 'the refused write took no sequence');
  assert.equal(fwd.size, Object.keys(expected).length);
  await waitFor('the watcher has every acknowledged write', () => Object.keys(acked).every((k) => watcher.has(k)));
  const joiner = await readyPeer(t, fwd.endpoint);
  assert.deepEqual(data(joiner), expected, 'the snapshot served during the fault');
  assert.deepEqual(data(watcher), expected, 'the live peer');

  // The fault clears: the kept group is written again (about a second later), then writes are taken.
  fault.clear();
  const after = await waitForReading('a write accepted once the fault cleared', () => attempt(writer.set('after', 'room')), (r) => {
    if (r instanceof Error) assert.match(r.message, REFUSED, 'refused only for the full disk meanwhile');
    return typeof r === 'number';
  });
  assert.ok(typeof after === 'number' && after > lastAcked);
  await waitFor('everyone has the write after the fault', () => watcher.has('after') && joiner.has('after'));
  assert.deepEqual(data(watcher), { ...expected, after: 'room' });
  watched(fwd.sequence);

  // The acknowledged writes reached the disk, the refused one did not; a clean close keeps the epoch.
  const { port, epoch } = fwd;
  await fwd.close();
  fwd = await Forwarder.start({ port, dataDir: dir, heartbeatInterval: 100, durability: 'async' });
  assert.equal(fwd.epoch, epoch);
  const check = await readyPeer(t, fwd.endpoint, { presence: false });
  assert.deepEqual(data(check), { ...expected, after: 'room' });
});
