/**
 * A full disk (issue 8): writes reject at the writer with a clear error naming the key and the
 * directory, nothing is half-applied (the forwarder's map and every peer hold exactly the
 * acknowledged writes), reads and snapshots go on, and writes succeed again once there is room.
 * Also the same after a restart: what was refused is not there.
 *
 * This is the real-disk proof, and it needs root to mount a tmpfs: without root it skips. That is
 * acceptable only because test/durable-fault.test.ts, which always runs, makes the same promises
 * (sync and async, restart included) with ENOSPC injected at the durable store's transaction;
 * keep the two in step.
 *
 * Topology: a small tmpfs mounted for the test (root only; skipped otherwise) holding the data
 * directory and a filler file that takes the free space; an in-process durable Forwarder on an
 * ephemeral port triple; in-process Peers.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { Forwarder, type Peer } from '../src/index.ts';
import { contents, readyPeer, waitFor, within } from './helpers.ts';

/** Mounts a tmpfs of `size` for the test, or returns undefined if this process cannot. */
function smallDisk(t: TestContext, size: string): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-enospc-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    rmdirSync(dir);
    return undefined;
  }
  t.after(() => {
    execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Fills the disk at `dir` with one file, in 64 KiB steps, until no more fits. */
function fill(dir: string): string {
  const file = join(dir, 'filler');
  const chunk = Buffer.alloc(64 * 1024, 1);
  writeFileSync(file, '');
  for (;;) {
    try {
      writeFileSync(file, chunk, { flag: 'a' });
    } catch {
      return file;
    }
  }
}

/** Writes until one is refused for lack of room; returns the acknowledged values and the error. */
async function writeUntilRefused(p: Peer, prefix: string): Promise<{ acked: Record<string, unknown>; error: { code?: string; message: string } }> {
  const acked: Record<string, unknown> = {};
  const value = 'v'.repeat(8 * 1024);
  for (let i = 0; i < 2000; i++) {
    // Ten at a time, so some share a commit with the one that fails.
    const batch = Array.from({ length: 10 }, (_, j) => {
      const key = `${prefix}${i * 10 + j}`;
      return p.set(key, value).then(
        () => ((acked[key] = value), undefined),
        (err: Error & { code?: string }) => err,
      );
    });
    const errors = (await Promise.all(batch)).filter((e) => e !== undefined);
    if (errors.length > 0) return { acked, error: errors[0]! };
  }
  throw new Error('the disk never filled');
}

test('disk full: writes reject with CLONEKV_STORAGE, nothing half-applied, reads and snapshots go on, writes resume once there is room', async (t) => {
  const disk = smallDisk(t, '8m');
  if (disk === undefined) return t.skip('needs root to mount a small tmpfs');
  const dataDir = join(disk, 'data');
  const fwd = await Forwarder.start({ port: 0, dataDir, heartbeatInterval: 100 });
  t.after(() => fwd.close());
  const writer = await readyPeer(t, fwd.endpoint, { writeTimeout: 10_000 });
  const watcher = await readyPeer(t, fwd.endpoint);
  await writer.set('before', 'full');
  const filler = fill(disk);

  const { acked, error } = await writeUntilRefused(writer, 'w/');
  assert.equal(error.code, 'CLONEKV_REJECTED', error.message);
  assert.match(error.message, /"w\/\d+" not stored: disk full at .*data/);
  assert.match(error.message, /free some space/);

  // Nothing half-applied: the forwarder, a new peer's snapshot and a live peer hold exactly what was acknowledged.
  const expected = { before: 'full', ...acked };
  const reader = await readyPeer(t, fwd.endpoint);
  const withoutPresence = (p: Peer): Record<string, unknown> => Object.fromEntries(Object.entries(contents(p)).filter(([k]) => !k.startsWith('$peers/')));
  assert.deepEqual(withoutPresence(reader), expected, 'a snapshot served while the disk is full');
  await waitFor('the live peer caught up', () => (watcher.version('before') ?? 0) > 0 && Object.keys(acked).every((k) => watcher.has(k)));
  assert.deepEqual(withoutPresence(watcher), expected);
  assert.equal(fwd.size - fwd.peers().length, Object.keys(expected).length, 'the forwarder map holds no refused write');

  // Room again: the same writer's next writes succeed.
  unlinkSync(filler);
  const seq = await within('a write after space was freed', writer.set('after', 'room'), 10_000);
  assert.ok(seq > 0);
  await waitFor('everyone has it', () => reader.has('after') && watcher.has('after'));

  // And the disk holds what was acknowledged, nothing refused.
  const { port } = fwd;
  await fwd.close();
  const again = await Forwarder.start({ port, dataDir, heartbeatInterval: 100 });
  t.after(() => again.close());
  const check = await readyPeer(t, again.endpoint);
  assert.deepEqual(withoutPresence(check), { ...expected, after: 'room' });
});

test('disk full in async mode: writes are refused until the kept group is on disk, then succeed; nothing acknowledged is lost', async (t) => {
  const disk = smallDisk(t, '8m');
  if (disk === undefined) return t.skip('needs root to mount a small tmpfs');
  const dataDir = join(disk, 'data');
  const fwd = await Forwarder.start({ port: 0, dataDir, heartbeatInterval: 100, durability: 'async' });
  t.after(() => fwd.close());
  const writer = await readyPeer(t, fwd.endpoint, { writeTimeout: 10_000 });
  const filler = fill(disk);
  const { acked, error } = await writeUntilRefused(writer, 'a/');
  assert.equal(error.code, 'CLONEKV_REJECTED', error.message);
  assert.match(error.message, /not stored: disk full at .*data/);
  unlinkSync(filler);
  // The kept group is written again within a second or so; then writes are taken again. Until
  // then each try is refused at once, so tries are paced (20 ms) and bounded by a deadline.
  let seq = 0;
  const deadline = Date.now() + 10_000;
  while (seq === 0 && Date.now() < deadline) {
    seq = await writer.set('after', 'room').catch(async () => {
      await new Promise((r) => setTimeout(r, 20));
      return 0;
    });
  }
  assert.ok(seq > 0, 'a write accepted once there is room');
  const { port } = fwd;
  await fwd.close();
  const again = await Forwarder.start({ port, dataDir, heartbeatInterval: 100, durability: 'async' });
  t.after(() => again.close());
  const check = await readyPeer(t, again.endpoint, { presence: false });
  for (const [k, v] of Object.entries({ ...acked, after: 'room' })) assert.equal(check.get(k), v, `${k} survived`);
});
