/**
 * A primary/backup pair: who is active at start, when the backup takes over (only when the
 * primary is silent AND a peer asks), the term and epoch announced to peers, and the returning
 * old primary that rejoins as passive.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Forwarder } from '../src/index.ts';
import { ClonekvError } from '../src/errors.ts';
import { forwarder, readyPeer, waitFor, within } from './helpers.ts';
import { FAST, member, pairPorts, replicating, startPair } from './pair-helpers.ts';
import { EMPTY, propMap, rawDealer } from './raw-sockets.ts';

const ICANHAZ = Buffer.from('ICANHAZ?');

/** Sends ICANHAZ? for everything on a raw (plain CHP) DEALER. */
function askSnapshot(t: Parameters<typeof rawDealer>[0], endpoint: string, resume?: string) {
  const d = rawDealer(t, endpoint, { clonekv: resume !== undefined });
  void d.dealer.send(resume === undefined ? [ICANHAZ, EMPTY] : [ICANHAZ, EMPTY, Buffer.from(resume)]);
  return d;
}

/** Reads until the KTHXBAI; returns its properties and whether it came within `ms`. */
async function kthxbai(d: ReturnType<typeof rawDealer>, ms = 5000): Promise<Map<string, string>> {
  for (;;) {
    const m = await d.inbox.next('KTHXBAI', ms);
    if (m[0]!.toString() === 'KTHXBAI') return propMap(m[3]!);
  }
}

test('primary and backup started together: the primary is active (term 1), the backup passive under the same epoch; only the active heartbeats', async (t) => {
  const { primary, backup } = await startPair(t);
  assert.equal(primary.role, 'active');
  assert.equal(backup.role, 'passive');
  assert.equal(primary.term, 1);
  assert.equal(backup.term, 1);
  assert.equal(backup.epoch, primary.epoch, 'the backup adopts the active epoch');
  assert.match(primary.stateEndpoint!, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  await waitFor('a few HUGZ from the active', () => primary.stats().heartbeats >= 3);
  assert.equal(backup.stats().heartbeats, 0, 'a passive member sends no HUGZ');
  const s = primary.stats().pair!;
  assert.equal(s.configured, 'primary');
  assert.equal(s.partner.connected, true);
  assert.equal(backup.stats().pair!.configured, 'backup');
  // A standalone forwarder has no pair.
  const alone = await forwarder(t);
  assert.equal(alone.role, 'standalone');
  assert.equal(alone.term, 0);
  assert.equal(alone.stateEndpoint, undefined);
  assert.equal(alone.stats().pair, undefined);
});

test('a primary alone becomes active after partnerTimeout and says its backup is absent', async (t) => {
  const ports = await pairPorts();
  const events: string[] = [];
  const started = Date.now();
  const primary = await member(t, 'primary', ports);
  primary.onPairEvent((e) => events.push(e.message));
  assert.equal(primary.role, 'passive', 'still deciding at start');
  await waitFor('primary active', () => primary.role === 'active');
  assert.ok(Date.now() - started >= FAST.partnerTimeout - 20, 'not before partnerTimeout');
  assert.equal(primary.stats().pair!.replication.state, 'absent');
  assert.ok(events.some((e) => e.startsWith('now active')), events.join('; '));
  assert.ok(events.some((e) => e.startsWith('backup absent')), events.join('; '));
  // And it serves: a peer syncs and writes, acknowledged without replication.
  const p = await readyPeer(t, primary.endpoint);
  assert.ok((await p.set('k', 1)) > 0);
});

test('a backup alone stays passive and never answers a snapshot request', async (t) => {
  const ports = await pairPorts();
  const backup = await member(t, 'backup', ports);
  const d = askSnapshot(t, backup.endpoint);
  // Several partner timeouts, with the request held meanwhile: never answered.
  await new Promise((r) => setTimeout(r, FAST.partnerTimeout * 3));
  assert.equal(backup.role, 'passive');
  assert.equal(d.inbox.unread, 0, 'no snapshot from a passive backup that never saw its primary');
  assert.equal(backup.stats().snapshots, 0);
});

test('the backup takes over only when the primary is silent AND a peer asks; it answers with term 2 under the same epoch, and delta answers follow the term rule', async (t) => {
  const ports = await pairPorts();
  // joinWait 0: the raw requesters below never subscribe their join topic.
  const primary = await member(t, 'primary', ports, { joinWait: 0 });
  const backup = await member(t, 'backup', ports, { joinWait: 0 });
  await replicating(primary, backup);
  const p = await readyPeer(t, primary.endpoint);
  for (let i = 0; i < 10; i++) await p.set(`k${i}`, i);
  const epoch = primary.epoch;
  await p.close();
  // The peer's goodbye deletes its presence key: term 1 ends after that.
  await waitFor('the goodbye replicated', () => backup.size === primary.size && backup.sequence === primary.sequence && primary.stats().peers === 0);
  const lastOfTerm1 = primary.sequence;
  // A request while the primary is alive is held, not answered, and no takeover happens.
  const early = askSnapshot(t, backup.endpoint);
  await new Promise((r) => setTimeout(r, FAST.partnerTimeout * 2));
  assert.equal(backup.role, 'passive', 'the primary is alive: no takeover however long a peer asks');
  assert.equal(early.inbox.unread, 0);
  await primary.close();
  // Silent primary: the held request makes the backup take over once partnerTimeout has passed.
  const end = await within('takeover answer', kthxbai(early, 5000));
  assert.equal(backup.role, 'active');
  assert.equal(backup.term, 2);
  assert.equal(end.get('term'), '2');
  assert.equal(end.get('epoch'), epoch, 'the same epoch: peers can resume by delta');
  assert.equal(backup.sequence, lastOfTerm1);
  // Delta by term: a peer that knew term 1 up to the end of term 1 gets a delta...
  const resumeOk = askSnapshot(t, backup.endpoint, `since=${lastOfTerm1}\nepoch=${epoch}\nterm=1\n`);
  assert.equal((await kthxbai(resumeOk)).get('delta'), '1');
  // ...after a write in term 2, a term-1 peer claiming to hold past the start of term 2 gets a full snapshot...
  const q = await readyPeer(t, backup.endpoint);
  await q.set('new', 1);
  const resumeBad = askSnapshot(t, backup.endpoint, `since=${lastOfTerm1 + 1}\nepoch=${epoch}\nterm=1\n`);
  assert.equal((await kthxbai(resumeBad)).get('delta'), undefined);
  // ...and with no term, only a `since` before term 2 began is answered by a delta.
  const noTermOld = askSnapshot(t, backup.endpoint, `since=${lastOfTerm1}\nepoch=${epoch}\n`);
  assert.equal((await kthxbai(noTermOld)).get('delta'), '1');
  const noTermNew = askSnapshot(t, backup.endpoint, `since=${lastOfTerm1 + 1}\nepoch=${epoch}\n`);
  assert.equal((await kthxbai(noTermNew)).get('delta'), undefined);
  const sameTerm = askSnapshot(t, backup.endpoint, `since=${lastOfTerm1 + 1}\nepoch=${epoch}\nterm=2\n`);
  assert.equal((await kthxbai(sameTerm)).get('delta'), '1');
});

test('the old primary comes back as passive, catches up, and never takes the role back while the other is active', async (t) => {
  const ports = await pairPorts();
  let primary = await member(t, 'primary', ports);
  const backup = await member(t, 'backup', ports);
  await replicating(primary, backup);
  await primary.close();
  const d = askSnapshot(t, backup.endpoint);
  await kthxbai(d);
  assert.equal(backup.role, 'active');
  const p = await readyPeer(t, backup.endpoint);
  for (let i = 0; i < 20; i++) await p.set(`after${i}`, i);
  primary = await member(t, 'primary', ports);
  await replicating(backup, primary);
  assert.equal(primary.role, 'passive', 'the configured primary rejoins as passive');
  assert.equal(primary.term, 2);
  assert.equal(primary.epoch, backup.epoch);
  assert.equal(primary.sequence, backup.sequence);
  assert.equal(primary.size, backup.size);
  // Writes are replicated to it now.
  const seq = await p.set('more', 1);
  assert.ok(primary.sequence >= seq, 'acknowledged means on the passive too');
  await new Promise((r) => setTimeout(r, FAST.partnerTimeout * 2));
  assert.equal(primary.role, 'passive');
  assert.equal(backup.role, 'active');
  await assert.rejects(primary.load([['x', 1]]), (err: unknown) => err instanceof ClonekvError);
});

test('pair options are checked and named', async () => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ role: 'primary' }, /partner/],
    [{ partner: 'tcp://127.0.0.1:5004' }, /partner.*applies only with role/],
    [{ statePort: 5003 }, /statePort/],
    [{ partnerTimeout: 100 }, /partnerTimeout/],
    [{ role: 'leader', partner: 'tcp://127.0.0.1:5004' }, /role/],
    [{ role: 'backup', partner: 'tcp://*:5004' }, /partner/],
    [{ role: 'backup', partner: 'localhost:5004' }, /partner/],
    [{ role: 'backup', partner: 'tcp://127.0.0.1:70000' }, /partner/],
    [{ role: 'backup', partner: 'tcp://127.0.0.1:5003', statePort: -1 }, /statePort/],
    [{ role: 'backup', partner: 'tcp://127.0.0.1:5003', partnerTimeout: 0 }, /partnerTimeout/],
  ];
  for (const [options, re] of bad) {
    await assert.rejects(Forwarder.start({ port: 0, ...options }), (err: unknown) => err instanceof ClonekvError && err.code === 'CLONEKV_INVALID_OPTION' && re.test(err.message), JSON.stringify(options));
  }
});

test('a primary that restarts empty while its backup holds the data does not wipe it: the backup (longer log) becomes active and the primary follows', async (t) => {
  const ports = await pairPorts();
  let primary = await member(t, 'primary', ports);
  const backup = await member(t, 'backup', ports);
  await replicating(primary, backup);
  const p = await readyPeer(t, primary.endpoint);
  for (let i = 0; i < 50; i++) await p.set(`k${i}`, i);
  await p.close();
  await waitFor('replicated', () => backup.sequence === primary.sequence && primary.stats().peers === 0);
  const keys = backup.size;
  await primary.close();
  // Back at once, in memory: empty, a new epoch, no term.
  primary = await member(t, 'primary', ports);
  await replicating(backup, primary);
  assert.equal(backup.role, 'active');
  assert.equal(backup.term, 2);
  assert.equal(primary.role, 'passive');
  assert.equal(backup.size, keys, 'the data survived');
  assert.equal(primary.size, keys);
});

test('a primary that went active alone and empty steps down for a backup that comes back with a longer log; the backup becomes active and the data survives', async (t) => {
  const { dataDir } = await import('./helpers.ts');
  const ports = await pairPorts();
  const backupDir = dataDir(t);
  let primary = await member(t, 'primary', ports);
  let backup = await member(t, 'backup', ports, { dataDir: backupDir });
  await replicating(primary, backup);
  const p = await readyPeer(t, primary.endpoint);
  for (let i = 0; i < 50; i++) await p.set(`k${i}`, i);
  await p.close();
  await waitFor('replicated', () => backup.sequence === primary.sequence && primary.stats().peers === 0);
  const keys = backup.size;
  await primary.close();
  await backup.close();
  primary = await member(t, 'primary', ports);
  await waitFor('the empty primary active alone', () => primary.role === 'active');
  assert.equal(primary.term, 1);
  backup = await member(t, 'backup', ports, { dataDir: backupDir });
  await replicating(backup, primary);
  assert.equal(backup.term, 2);
  assert.equal(backup.size, keys, 'the longer log was kept');
  assert.equal(primary.size, keys);
});
