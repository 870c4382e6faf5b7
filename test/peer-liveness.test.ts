/**
 * Issue 7, item 17 (peer parts): only the subscriber's stream proves the server alive; the
 * protection against a plain server's unconfirmed join is armed again after that server
 * restarts; `serverStats(timeout)` keeps its timeout while the peer cannot join.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Peer, type ResyncReason } from '../src/index.ts';
import { forwarder, waitFor, within } from './helpers.ts';
import { PlainServer } from './plain-server.ts';
import { EMPTY } from './raw-sockets.ts';
import { TcpProxy } from './tcp-proxy.ts';

test('a busy writer whose subscription is dead goes stale: acknowledgements on the DEALER are not liveness', async (t) => {
  // Topology: Forwarder; one Peer (subtree mine/): DEALER→P directly, SUB→P+1 through a
  // TcpProxy. The peer keeps writing outside its subtree (each write acknowledged on the
  // DEALER); the proxy is cut, so nothing arrives on the SUB.
  const fwd = await forwarder(t, { heartbeatInterval: 50 });
  const proxy = await TcpProxy.start(fwd.endpoints.publisher);
  t.after(() => proxy.close());
  const peer = new Peer({ server: { ...fwd.endpoints, publisher: proxy.endpoint }, subtree: 'mine/', silenceTimeout: 300 });
  t.after(() => peer.close());
  await within('peer ready', peer.ready());
  const reasons: ResyncReason[] = [];
  peer.on('resync', (e) => reasons.push(e.reason));
  let writing = true;
  let acknowledged = 0;
  const loop = (async () => {
    while (writing) {
      await peer.set(`other/${acknowledged % 10}`, acknowledged);
      acknowledged++;
    }
  })();
  t.after(async () => {
    writing = false;
    await loop.catch(() => {});
  });
  await waitFor('writes acknowledged', () => acknowledged > 10);
  proxy.cut();
  await waitFor('the peer to notice the silence', () => reasons.includes('silence'), 10_000);
  const during = acknowledged;
  await waitFor('writes still acknowledged meanwhile', () => acknowledged > during + 10);
  writing = false;
  await loop;
});

test('a plain server restarted on the same port gets its join confirmed again: an update made before the subscription is back is not missed', async (t) => {
  // Topology: PlainServer (ROUTER P, XPUB P+1, SUB P+2); one Peer (subtree app/): DEALER→P
  // directly, SUB→P+1 through a TcpProxy. With the proxy cut the server restarts; the peer
  // resyncs (silence) from the new run while its subscription is still down; an update is made
  // then; when the proxy is restored the peer must take another snapshot to find it.
  const server = await PlainServer.start(t, { 'app/old': Buffer.from('old') });
  const proxy = await TcpProxy.start(server.port + 1);
  t.after(() => proxy.close());
  const endpoints = { snapshot: server.endpoint, publisher: proxy.endpoint, collector: `tcp://127.0.0.1:${server.port + 2}` };
  const peer = new Peer({ server: endpoints, subtree: 'app/', silenceTimeout: 500, snapshotRetryDelay: 100, maxRetryDelay: 400 });
  t.after(() => peer.close());
  await within('peer ready', peer.ready());
  await waitFor('the join confirmed', () => peer.stats().snapshots >= 2 && peer.status === 'live');

  proxy.cut();
  await server.restart({ 'app/new': Buffer.from('new') });
  await waitFor('the peer resynced from the new run', () => peer.has('app/new') && peer.status === 'live', 10_000);
  const missed = server.apply('app/missed', EMPTY, Buffer.from('m'));
  proxy.restore();
  await waitFor('the update made before the subscription was back', () => peer.version('app/missed') === missed, 10_000);
  assert.deepEqual(Buffer.from(peer.get('app/missed') as Uint8Array), Buffer.from('m'));
  assert.equal(peer.has('app/old'), false);
});

test('serverStats(timeout) keeps its timeout while the peer cannot join, and refuses a bad timeout', async (t) => {
  // Topology: one Peer towards a port where nothing listens.
  const peer = new Peer({ server: 'tcp://127.0.0.1:9', presence: false });
  t.after(() => peer.close());
  await within('serverStats to time out', assert.rejects(peer.serverStats(200), { code: 'CLONEKV_TIMEOUT' }), 5000);
  for (const bad of [Number.NaN, -1, 0, 2 ** 31, 1.5]) {
    await assert.rejects(peer.serverStats(bad), { code: 'CLONEKV_INVALID_OPTION', message: /timeout/ });
  }
});

test('serverStats() returns the forwarder counters with the presence table', async (t) => {
  const fwd = await forwarder(t);
  const peer = new Peer({ server: fwd.endpoint, name: 'asker' });
  t.after(() => peer.close());
  await within('peer ready', peer.ready());
  const s = await peer.serverStats(5000);
  assert.equal(typeof s.sequence, 'number');
  assert.equal(typeof s.keys, 'number');
  assert.ok(Array.isArray(s.peerList));
  assert.equal(typeof s.epoch, 'string');
});
