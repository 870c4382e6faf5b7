/**
 * Fencing in a primary/backup pair: a passive member never applies a write (dropped, counted,
 * unanswered); an active that learns of a higher term steps down at once, undoes what it had
 * not published (its writers get no answer and retry at the new active, which applies each
 * write once), and rejoins as passive with the new active's state (a full copy when it had
 * published updates the new active never had).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { Forwarder, type ForwarderOptions } from '../src/index.ts';
import { entrySize, packBatch } from '../src/protocol/batch.ts';
import { readyPeer, waitFor } from './helpers.ts';
import { FAST, pairPorts, replicating, startPair } from './pair-helpers.ts';
import { EMPTY, propMap, rawDealer, ZERO_SEQ } from './raw-sockets.ts';
import { tcpProxy } from './tcp-proxy.ts';

const ICANHAZ = Buffer.from('ICANHAZ?');

/** A pair whose state channel runs through two cuttable proxies. */
async function proxiedPair(t: TestContext, primaryOptions: ForwarderOptions = {}, backupOptions: ForwarderOptions = {}) {
  const ports = await pairPorts();
  const toBackup = await tcpProxy(t, ports.backup);
  const toPrimary = await tcpProxy(t, ports.primary);
  const start = async (role: 'primary' | 'backup', options: ForwarderOptions): Promise<Forwarder> => {
    const f = await Forwarder.start({
      port: 0,
      ...FAST,
      joinWait: 0,
      role,
      statePort: role === 'primary' ? ports.primary : ports.backup,
      partner: (role === 'primary' ? toBackup : toPrimary).endpoint,
      ...options,
    });
    t.after(() => f.close());
    return f;
  };
  const primary = await start('primary', primaryOptions);
  const backup = await start('backup', backupOptions);
  await replicating(primary, backup);
  return {
    primary,
    backup,
    cut: () => {
      toBackup.cut();
      toPrimary.cut();
    },
    restore: () => {
      toBackup.restore();
      toPrimary.restore();
    },
  };
}

function kvset(key: string, uuid: Buffer, body: Buffer, props = ''): Buffer[] {
  return [Buffer.from(key), ZERO_SEQ, uuid, Buffer.from(props), body];
}

async function ackOf(d: ReturnType<typeof rawDealer>, uuid: Buffer): Promise<{ seq: number; status: string | undefined }> {
  for (;;) {
    const m = await d.inbox.next('KVACK', 5000);
    if (m[0]!.toString() === 'KVACK' && m[2]!.equals(uuid)) return { seq: Number(m[1]!.readBigInt64BE()), status: propMap(m[3]!).get('status') };
  }
}

test('a passive member drops writes on every path (KVSET, KVWRITE, the collector, peer beats): nothing applied, nothing answered, counted', async (t) => {
  const { primary, backup } = await startPair(t);
  const before = backup.sequence;
  const d = rawDealer(t, backup.endpoint, { clonekv: true });
  const uuid = randomBytes(16);
  await d.dealer.send(kvset('nope', uuid, Buffer.from('x')));
  const entry = { key: Buffer.from('nope2'), sequence: 0, uuid: randomBytes(16), properties: EMPTY, body: Buffer.from('y') };
  const batch = packBatch([entry], entrySize(entry));
  await d.dealer.send([Buffer.from('KVWRITE'), ZERO_SEQ, EMPTY, EMPTY, batch]);
  await d.dealer.send([Buffer.from('KVBEAT'), ZERO_SEQ, EMPTY, Buffer.from('owner=abcd\nname=x\n'), EMPTY]);
  const pub = new zmq.Publisher({ linger: 0 });
  t.after(() => pub.close());
  pub.connect(backup.endpoints.collector);
  // The collector subscribes to everything on connect; send until one is counted.
  await waitFor('collector write dropped', () => {
    void pub.send(kvset('plain', randomBytes(16), Buffer.from('z')));
    return backup.stats().passiveDrops >= 4;
  });
  // Stats are still answered by a passive member, and show its role.
  const asked = randomBytes(16);
  await d.dealer.send([Buffer.from('KVSTATS'), ZERO_SEQ, asked, EMPTY, EMPTY]);
  for (;;) {
    const m = await d.inbox.next('KVSTATS answer', 5000);
    if (m[0]!.toString() !== 'KVSTATS') continue;
    assert.equal(JSON.parse(m[4]!.toString()).pair.role, 'passive');
    break;
  }
  assert.equal(d.inbox.all.filter((m) => m[0]!.toString() !== 'KVSTATS').length, 0, 'no acknowledgement from a passive member');
  assert.equal(backup.sequence, before);
  assert.equal(primary.sequence, before, 'and nothing reached the active through it');
});

test('an active that learns of a higher term steps down at once: its unpublished write is undone and unanswered, and applied once at the new active', async (t) => {
  // The primary waits long before declaring its backup absent; the backup takes over fast.
  const { primary, backup, cut, restore } = await proxiedPair(t, { partnerTimeout: 5000 }, { partnerTimeout: FAST.partnerTimeout });
  const events: string[] = [];
  primary.onPairEvent((e) => events.push(e.message));
  const p = await readyPeer(t, primary.endpoint);
  await p.set('before', 1);
  await p.close();
  // The peer's goodbye (its presence key deleted) replicated too.
  await waitFor('replicated', () => primary.stats().peers === 0 && backup.sequence === primary.sequence);
  const base = primary.sequence;
  cut();
  // A write at the primary now waits for the (unreachable) backup.
  const d = rawDealer(t, primary.endpoint, { clonekv: true });
  const uuid = randomBytes(16);
  await d.dealer.send(kvset('late', uuid, Buffer.from('w')));
  await waitFor('the write is stored and waits', () => primary.sequence === base + 1);
  // The backup takes over (the primary is silent to it, and a peer asks).
  const asker = rawDealer(t, backup.endpoint);
  await asker.dealer.send([ICANHAZ, EMPTY]);
  await waitFor('backup active', () => backup.role === 'active');
  assert.equal(backup.term, 2);
  restore();
  await waitFor('the primary stepped down', () => primary.role === 'passive');
  assert.ok(events.some((e) => e.startsWith('now passive')), events.join('; '));
  assert.equal(primary.term, 2);
  await replicating(backup, primary);
  assert.equal(primary.sequence, backup.sequence, 'the undone write is gone from the old primary');
  assert.equal(primary.stats().published, backup.stats().published);
  // Sent late to the fenced server again: dropped.
  await d.dealer.send(kvset('late', uuid, Buffer.from('w')));
  await waitFor('dropped', () => primary.stats().passiveDrops >= 1);
  // Replies on one ROUTER → DEALER pipe keep their order: once a stats answer asked after both
  // writes has come, an acknowledgement of either would have come before it.
  const asked = randomBytes(16);
  await d.dealer.send([Buffer.from('KVSTATS'), ZERO_SEQ, asked, EMPTY, EMPTY]);
  await waitFor('the stats answer', () => d.inbox.all.some((m) => m[0]!.toString() === 'KVSTATS' && m[2]!.equals(asked)));
  assert.equal(d.inbox.all.filter((m) => m[0]!.toString() === 'KVACK').length, 0, 'the fenced write gets no answer');
  // The writer retries at the new active: applied once.
  const e = rawDealer(t, backup.endpoint, { clonekv: true });
  const seqBefore = backup.sequence;
  await e.dealer.send(kvset('late', uuid, Buffer.from('w')));
  const first = await ackOf(e, uuid);
  assert.equal(first.status, 'ok');
  assert.equal(first.seq, seqBefore + 1);
  await e.dealer.send(kvset('late', uuid, Buffer.from('w')));
  const again = await ackOf(e, uuid);
  assert.equal(again.seq, first.seq, 'applied once');
  await waitFor('replicated to the old primary', () => primary.sequence === backup.sequence);
});

test('after a split (each side active, each accepting writes) the lower term rejoins passive with a full copy: its own writes of the split are dropped', async (t) => {
  const { primary, backup, cut, restore } = await proxiedPair(t);
  const p = await readyPeer(t, primary.endpoint);
  await p.set('shared', 1);
  cut();
  await waitFor('the primary goes on alone', () => primary.stats().pair!.replication.state === 'absent');
  await p.set('onlyOnPrimary', 1);
  await p.close();
  const asker = rawDealer(t, backup.endpoint);
  await asker.dealer.send([ICANHAZ, EMPTY]);
  await waitFor('backup active', () => backup.role === 'active');
  const q = await readyPeer(t, backup.endpoint);
  await q.set('onlyOnBackup', 1);
  await q.close();
  const fullBefore = backup.stats().pair!.syncs.full;
  restore();
  await waitFor('the primary stepped down', () => primary.role === 'passive');
  await replicating(backup, primary);
  assert.ok(backup.stats().pair!.syncs.full > fullBefore, 'a full copy: the old primary had updates the new active never had');
  await waitFor('same state', () => primary.sequence === backup.sequence && primary.size === backup.size);
  // Read the old primary's state: make it active again (the other one gone) and look.
  await backup.close();
  const asker2 = rawDealer(t, primary.endpoint);
  await asker2.dealer.send([ICANHAZ, EMPTY]);
  await waitFor('primary active again', () => primary.role === 'active');
  assert.equal(primary.term, 3);
  const r = await readyPeer(t, primary.endpoint);
  assert.equal(r.get('shared'), 1);
  assert.equal(r.get('onlyOnBackup'), 1);
  assert.equal(r.get('onlyOnPrimary'), undefined, 'the lower term lost its split-time write');
});

test('a link cut while peers reach only the primary: one active throughout, the backup declared absent, and both agree once the link is back', async (t) => {
  const { primary, backup, cut, restore } = await proxiedPair(t);
  const p = await readyPeer(t, primary.endpoint);
  await p.set('before', 1);
  cut();
  await waitFor('the primary goes on alone', () => primary.stats().pair!.replication.state === 'absent');
  for (let i = 0; i < 20; i++) await p.set(`during${i}`, i);
  assert.equal(backup.role, 'passive', 'nobody asked the backup: no second active');
  restore();
  await replicating(primary, backup);
  const seq = await p.set('after', 1);
  assert.ok(backup.sequence >= seq);
  await waitFor('same state', () => backup.sequence === primary.sequence && backup.size === primary.size);
  assert.equal(backup.role, 'passive');
  assert.equal(primary.term, 1);
});
