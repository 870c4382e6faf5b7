/**
 * A peer that asks the passive member of a pair while the active serves is sent on at once
 * (KVPASSIVE), instead of waiting `silenceTimeout` for an answer that only a takeover would
 * bring: a backup listed first, or a blip of the peer's own connection, costs milliseconds. A
 * plain CHP client is never sent that (it cannot read it): its request is only held.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FailoverInfo } from '../src/index.ts';
import { forwarder, peer, waitFor, within } from './helpers.ts';
import { FAST, startPair } from './pair-helpers.ts';
import { bindServerSockets, EMPTY, rawDealer, received, seqFrame } from './raw-sockets.ts';

const ICANHAZ = Buffer.from('ICANHAZ?');

test('a peer listing the passive member first is sent on to the active at once, and syncs there', async (t) => {
  const { primary, backup } = await startPair(t, { both: FAST });
  await primary.load([['config/a', 1]]);
  const moves: FailoverInfo[] = [];
  // silenceTimeout 3 s: without the notice the peer would wait that long at the backup.
  const p = peer(t, [backup.endpoint, primary.endpoint], { silenceTimeout: 3000 });
  p.on('failover', (f) => moves.push(f));
  const started = Date.now();
  await within('ready through the active', p.ready(), 10_000);
  const took = Date.now() - started;
  assert.ok(took < 1500, `ready after ${took} ms (silenceTimeout 3000)`);
  assert.equal(p.get('config/a'), 1);
  assert.equal(p.server, primary.endpoint);
  assert.deepEqual(moves.map((m) => [m.from, m.to, m.reason]), [[backup.endpoint, primary.endpoint, 'passive']]);
  assert.ok(backup.stats().passiveNotices >= 1);
  assert.equal(backup.role, 'passive', 'the request did not make it take over');
  // Writes go to the active and are acknowledged.
  assert.ok((await p.set('config/b', 2)) > 0);
  t.diagnostic(`ready after ${took} ms`);
});

test('a plain CHP client asking the passive member gets nothing back (its request is only held)', async (t) => {
  const { primary, backup } = await startPair(t, { both: FAST });
  const plain = rawDealer(t, backup.endpoint);
  await plain.dealer.send([ICANHAZ, EMPTY]);
  // A clonekv-looking requester asked after it is answered with KVPASSIVE: once that has come,
  // the plain request (sent first, on the same ROUTER) was long looked at.
  const clonekv = rawDealer(t, backup.endpoint, { clonekv: true });
  await clonekv.dealer.send([ICANHAZ, EMPTY]);
  const notice = await clonekv.inbox.next('KVPASSIVE', 5000);
  assert.equal(notice[0]!.toString(), 'KVPASSIVE');
  assert.match(notice[3]!.toString(), /^role=passive\nterm=1\n$/);
  assert.equal(plain.inbox.unread, 0, 'the plain client got nothing');
  assert.equal(backup.role, 'passive');
  assert.equal(primary.role, 'active');
});

/** A hostile server that answers every snapshot request with the given KVPASSIVE frames. */
async function passiveLiar(t: Parameters<typeof rawDealer>[0], frames: (seq: Buffer) => Buffer[]) {
  const s = await bindServerSockets(0);
  t.after(() => {
    s.router.close();
    s.pub.close();
    s.collector.close();
  });
  let asked = 0;
  void (async () => {
    for await (const m of received(s.router)) {
      if (m[1]?.toString() !== 'ICANHAZ?') continue;
      asked++;
      await s.router.send([m[0]!, ...frames(seqFrame(0))]).catch(() => {});
    }
  })();
  return { endpoint: `tcp://127.0.0.1:${s.port}`, asked: () => asked };
}

test('a KVPASSIVE that is not one (a sequence, no role=passive) is counted malformed and moves nobody; a single-server peer is never moved', async (t) => {
  const fwd = await forwarder(t);
  // Malformed notices: the peer stays on the liar until silenceTimeout, never for 'passive'.
  const liar = await passiveLiar(t, () => [Buffer.from('KVPASSIVE'), seqFrame(7), EMPTY, Buffer.from('role=passive\n'), EMPTY]);
  const moves: string[] = [];
  const p = peer(t, [liar.endpoint, fwd.endpoint], { silenceTimeout: 400, snapshotRetryDelay: 100 });
  p.on('failover', (f: FailoverInfo) => moves.push(f.reason));
  await waitFor('the liar asked', () => liar.asked() >= 1);
  await within('ready through the forwarder', p.ready(), 10_000);
  assert.ok(!moves.includes('passive'), `moves: ${moves.join(', ')}`);
  assert.ok(p.stats().malformed >= 1, 'the bad notice was counted');
  // A well-formed notice to a peer with one server: it keeps asking there, never leaves.
  const honestLiar = await passiveLiar(t, (zero) => [Buffer.from('KVPASSIVE'), zero, EMPTY, Buffer.from('role=passive\nterm=1\n'), EMPTY]);
  const single = peer(t, honestLiar.endpoint, { snapshotRetryDelay: 50, maxRetryDelay: 100 });
  await waitFor('asked again and again', () => honestLiar.asked() >= 3);
  assert.equal(single.stats().failovers, 0);
  assert.equal(single.status, 'syncing');
});
