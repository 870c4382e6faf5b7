/**
 * Replication in a primary/backup pair: what the active acknowledges is on the backup first,
 * under one epoch and one sequence; write outcomes (successes and refusals) are de-duplicated
 * across a takeover; a ttl has one absolute meaning; a backup catches up by history when it
 * can and by a full copy otherwise (in memory and durable); an absent backup is said.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { dataDir, readyPeer, waitFor, within } from './helpers.ts';
import { FAST, member, pairPorts, replicating, startPair } from './pair-helpers.ts';
import { EMPTY, propMap, rawDealer, ZERO_SEQ } from './raw-sockets.ts';
import type { Forwarder } from '../src/index.ts';
import type { TestContext } from 'node:test';

const ICANHAZ = Buffer.from('ICANHAZ?');

/** Makes a passive member take over: its partner must be closed; a raw request triggers it. */
async function takeOver(t: TestContext, backup: Forwarder): Promise<void> {
  const d = rawDealer(t, backup.endpoint);
  await d.dealer.send([ICANHAZ, EMPTY]);
  await waitFor('takeover', () => backup.role === 'active');
}

/** A raw KVSET with a chosen uuid; resolves with the KVACK's sequence and properties. */
async function rawSet(d: ReturnType<typeof rawDealer>, key: string, uuid: Buffer, props: string, body: Buffer): Promise<{ seq: number; props: Map<string, string> }> {
  await d.dealer.send([Buffer.from(key), ZERO_SEQ, uuid, Buffer.from(props), body]);
  for (;;) {
    const m = await d.inbox.next('KVACK', 5000);
    if (m[0]!.toString() === 'KVACK' && m[2]!.equals(uuid)) return { seq: Number(m[1]!.readBigInt64BE()), props: propMap(m[3]!) };
  }
}

test('every write the active acknowledges is on the backup before the acknowledgement, at the same sequence', async (t) => {
  const { primary, backup } = await startPair(t);
  const p = await readyPeer(t, primary.endpoint);
  for (let i = 0; i < 200; i++) {
    const seq = await p.set(`k${i % 50}`, { i });
    assert.ok(backup.sequence >= seq, `write ${i} acknowledged at ${seq} while the backup holds ${backup.sequence}`);
  }
  // Pipelined: many writes in flight at once, each on the backup when acknowledged.
  const acked = await Promise.all(Array.from({ length: 2000 }, (_, i) => p.set(`burst${i % 100}`, i).then((seq) => ({ seq, on: backup.sequence }))));
  for (const { seq, on } of acked) assert.ok(on >= seq, `acknowledged at ${seq}, backup at ${on}`);
  await waitFor('same state', () => backup.sequence === primary.sequence);
  assert.equal(backup.size, primary.size);
  assert.equal(backup.epoch, primary.epoch);
  const s = primary.stats().pair!;
  assert.equal(s.replication.state, 'replicating');
  assert.equal(s.replication.lag, 0);
});

test('a write retried at the backup after a takeover is applied once, and a refused outcome stays refused', async (t) => {
  const { primary, backup } = await startPair(t);
  const d = rawDealer(t, primary.endpoint, { clonekv: true });
  const body = Buffer.from('v1');
  const u1 = randomBytes(16);
  const first = await rawSet(d, 'once', u1, '', body);
  assert.equal(first.props.get('status'), 'ok');
  // A conditional write that conflicts (the key exists, if-version=0 expects it absent)...
  const u2 = randomBytes(16);
  const conflict = await rawSet(d, 'once', u2, 'if-version=0\n', Buffer.from('v2'));
  assert.equal(conflict.props.get('status'), 'conflict');
  // ...then the key is deleted, so a fresh decision on a retry would now succeed.
  const del = await rawSet(d, 'once', randomBytes(16), '', EMPTY);
  assert.equal(del.props.get('status'), 'ok');
  await waitFor('replicated', () => backup.sequence === primary.sequence);
  await primary.close();
  await takeOver(t, backup);
  const before = backup.sequence;
  const e = rawDealer(t, backup.endpoint, { clonekv: true });
  const retry = await rawSet(e, 'once', u1, '', body);
  assert.equal(retry.props.get('status'), 'ok');
  assert.equal(retry.seq, first.seq, 'the retry gets the first outcome, not a new sequence');
  const retry2 = await rawSet(e, 'once', u2, 'if-version=0\n', Buffer.from('v2'));
  assert.equal(retry2.props.get('status'), 'conflict', 'the refused outcome was replicated too');
  assert.equal(backup.sequence, before, 'nothing applied twice');
  assert.equal(backup.stats().duplicates, 2);
});

test('a ttl has one absolute meaning: the backup keeps the active deadline, does not expire by itself, and expires what is overdue when it takes over', async (t) => {
  const { primary, backup } = await startPair(t);
  const p = await readyPeer(t, primary.endpoint);
  // Expired by the active: the backup receives the delete, and expires nothing itself.
  await p.set('short', 1, { ttl: 0.2 });
  assert.equal(backup.size, primary.size);
  await waitFor('expired on the active', () => primary.stats().expired === 1);
  await waitFor('the delete replicated', () => backup.sequence === primary.sequence);
  assert.equal(backup.stats().expired, 0, 'a passive member never expires keys itself');
  // A key whose deadline passes while nobody is active: overdue at takeover, expired at once.
  const start = Date.now();
  await p.set('doomed', 1, { ttl: 0.5 });
  await p.set('kept', 1, { ttl: 60 });
  await p.close();
  await primary.close();
  await waitFor('the deadline passed', () => Date.now() - start > 700);
  assert.equal(backup.stats().expired, 0);
  await takeOver(t, backup);
  assert.equal(backup.stats().expired, 1, 'overdue at takeover: expired before serving anything');
  const q = await readyPeer(t, backup.endpoint);
  assert.equal(q.get('doomed'), undefined);
  assert.equal(q.get('kept'), 1, 'a later deadline is kept');
});

test('a restarted in-memory backup gets a full copy; a restarted durable backup catches up from the history', async (t) => {
  const ports = await pairPorts();
  const primaryDir = dataDir(t);
  const backupDir = dataDir(t);
  const primary = await member(t, 'primary', ports, { dataDir: primaryDir });
  let backup = await member(t, 'backup', ports, { dataDir: backupDir });
  await replicating(primary, backup);
  const p = await readyPeer(t, primary.endpoint);
  for (let i = 0; i < 100; i++) await p.set(`k${i}`, i);
  const fullBefore = primary.stats().pair!.syncs.full;
  const deltaBefore = primary.stats().pair!.syncs.delta;
  // Durable backup restarted: same directory, same epoch and lineage: by history.
  await backup.close();
  for (let i = 0; i < 50; i++) await p.set(`during${i}`, i);
  backup = await member(t, 'backup', ports, { dataDir: backupDir });
  assert.equal(backup.recovery!.keys > 0, true, 'it recovered its copy from disk');
  await replicating(primary, backup);
  assert.equal(primary.stats().pair!.syncs.full, fullBefore, 'no full copy for a durable backup that kept its log');
  assert.ok(primary.stats().pair!.syncs.delta > deltaBefore);
  assert.equal(backup.sequence, primary.sequence);
  assert.equal(backup.size, primary.size);
  // Replaced by an in-memory backup (new epoch): a full copy, then live.
  await backup.close();
  for (let i = 0; i < 10; i++) await p.set(`gap${i}`, i);
  const fresh = await member(t, 'backup', ports);
  await replicating(primary, fresh);
  assert.equal(primary.stats().pair!.syncs.full, fullBefore + 1);
  assert.equal(fresh.epoch, primary.epoch);
  assert.equal(fresh.sequence, primary.sequence);
  assert.equal(fresh.size, primary.size);
  // And the durable backup, back again after the in-memory one: its directory is behind but agrees.
  await fresh.close();
  backup = await member(t, 'backup', ports, { dataDir: backupDir });
  await replicating(primary, backup);
  assert.equal(backup.size, primary.size);
  // What it wrote to disk survives its own restart.
  const seq = await p.set('last', 1);
  assert.ok(backup.sequence >= seq);
  await backup.close();
  backup = await member(t, 'backup', ports, { dataDir: backupDir });
  assert.ok(backup.recovery!.sequence >= seq, `recovered up to ${backup.recovery!.sequence}, acknowledged ${seq}`);
});

test('a durable backup loading a full copy replaces what its directory held', async (t) => {
  const ports = await pairPorts();
  const backupDir = dataDir(t);
  // The backup's directory first holds another history (a standalone run writes it).
  const { Forwarder } = await import('../src/index.ts');
  const lone = await Forwarder.start({ port: 0, dataDir: backupDir });
  await lone.load([['stale', 1], ['other', 2]]);
  await lone.close();
  const primary = await member(t, 'primary', ports);
  const p = await readyPeer(t, primary.endpoint);
  await p.set('fresh', 1);
  let backup = await member(t, 'backup', ports, { dataDir: backupDir });
  await replicating(primary, backup);
  assert.equal(backup.size, primary.size);
  await backup.close();
  backup = await member(t, 'backup', ports, { dataDir: backupDir });
  assert.equal(backup.recovery!.keys, primary.size, 'the stale keys are gone from disk');
  assert.equal(backup.epoch, primary.epoch);
});

test('without its backup the active keeps acknowledging writes, and says so; the backup coming back is said too', async (t) => {
  const { primary, backup, ports } = await startPair(t);
  const events: string[] = [];
  primary.onPairEvent((e) => events.push(e.message));
  const p = await readyPeer(t, primary.endpoint);
  await p.set('a', 1);
  await backup.close();
  // Writes wait at most about partnerTimeout, then go on without replication.
  const started = Date.now();
  const seq = await within('write without backup', p.set('b', 2), 5000);
  assert.ok(seq > 0);
  assert.ok(Date.now() - started < FAST.partnerTimeout * 5);
  assert.equal(primary.stats().pair!.replication.state, 'absent');
  assert.ok(events.some((e) => e.startsWith('backup absent')), events.join('; '));
  for (let i = 0; i < 20; i++) await p.set(`alone${i}`, i);
  const again = await member(t, 'backup', ports);
  await replicating(primary, again);
  assert.ok(events.some((e) => e.startsWith('backup connected')), events.join('; '));
  assert.equal(again.sequence, primary.sequence);
});

test('when the active disk refuses updates it already sent to the backup, the backup starts over and both agree again', async (t) => {
  const { storageFaults } = await import('../src/store/durable-store.ts');
  const ports = await pairPorts();
  const primaryDir = dataDir(t);
  const primary = await member(t, 'primary', ports, { dataDir: primaryDir });
  const backup = await member(t, 'backup', ports, { dataDir: dataDir(t) });
  await replicating(primary, backup);
  const p = await readyPeer(t, primary.endpoint);
  await p.set('a', 1);
  const syncs = (): number => primary.stats().pair!.syncs.full + primary.stats().pair!.syncs.delta;
  const syncsBefore = syncs();
  t.after(() => void (storageFaults.writeFault = undefined));
  storageFaults.writeFault = (dir) => {
    if (dir === primaryDir) throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
  };
  await assert.rejects(p.set('refused', 1, { timeout: 3000 }));
  storageFaults.writeFault = undefined;
  // Told to start over: it asks again (by history if the undone updates never reached it, else a full copy).
  await waitFor('a new catch-up after the reset', () => syncs() > syncsBefore);
  await replicating(primary, backup);
  const seq = await p.set('b', 2);
  assert.ok(backup.sequence >= seq);
  await waitFor('same state', () => backup.sequence === primary.sequence);
  assert.equal(backup.size, primary.size, 'the refused update is on neither');
});
