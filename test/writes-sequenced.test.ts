/**
 * Item 7: a write the forwarder has acknowledged (ok + sequence) never reports a timeout, however
 * long the peer takes to see it locally. Topology: an in-process Forwarder on an ephemeral port
 * triple; a Peer whose subscriber goes through a cuttable loopback TCP proxy (test/tcp-proxy.ts),
 * while its DEALER (snapshot, writes, acknowledgements) goes straight to the forwarder.
 *
 * ```
 *   Peer SUB ──► proxy ──► forwarder XPUB :P+1   (cut: the write's update never arrives live)
 *   Peer DEALER ◄──────► forwarder ROUTER :P     (the acknowledgement arrives at once)
 * ```
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forwarder, peer, within } from './helpers.ts';
import { tcpProxy } from './tcp-proxy.ts';

test('an acknowledged write waits for a long resync instead of timing out, then reads its value', async (t) => {
  // joinWait: with its subscription cut, the peer's resync is answered only after this long,
  // far past the write timeout: a resync as slow as a big snapshot.
  const fwd = await forwarder(t, { joinWait: 1500, heartbeatInterval: 50 });
  const proxy = await tcpProxy(t, fwd.port + 1);
  const writeTimeout = 200;
  const p = peer(t, 'unused', {
    server: { snapshot: fwd.endpoint, publisher: proxy.endpoint, collector: `tcp://127.0.0.1:${fwd.port + 2}` },
    writeTimeout,
    silenceTimeout: 400,
    snapshotRetryDelay: 5000,
  });
  await within('ready', p.ready());
  assert.equal(await p.set('before', 1), fwd.sequence);
  proxy.cut();
  const started = Date.now();
  const resyncs: string[] = [];
  p.on('resync', ({ reason }) => resyncs.push(reason));
  const write = p.set('acked', 'late but sure');
  let readAtResolve: unknown;
  const seq = await within(
    'the acknowledged write resolves',
    write.then((s) => {
      readAtResolve = p.get('acked');
      return s;
    }),
    15_000,
  );
  assert.ok(Date.now() - started > writeTimeout, 'the write did outlive its timeout (the test shows what it means to)');
  assert.ok(resyncs.length > 0, 'the value was learnt through a resync');
  assert.ok(seq > 1 && seq <= fwd.sequence);
  assert.equal(readAtResolve, 'late but sure', 'read-your-writes when it resolves');
  proxy.restore();
});
