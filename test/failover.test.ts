/**
 * Issue 9, peers with several servers, against clonekv forwarders.
 *
 * 1. One forwarder reached by two routes (two triples of TCP proxies): the peer holds the same
 *    epoch on both, so when the route in use is cut (its connections drop) it moves to the
 *    other at once and resumes by delta; its pending writes, re-sent there with the same uuid,
 *    are applied once (the forwarder de-duplicates them).
 * ```
 *   Peer ──► proxies A (P, P+1, P+2) ──┐
 *        ──► proxies B (P, P+1, P+2) ──┴──► Forwarder
 * ```
 * 2. Two standalone forwarders (different epochs), the first a child process: SIGSTOP makes it
 *    silent without dropping a connection; the peer moves on after silenceTimeout, resyncs in
 *    full (another epoch) and its map is replaced; writes made while it was stuck are applied
 *    by the second forwarder.
 * 3. A real pair (`clonekv serve --primary/--backup` processes) at the default settings: a
 *    SIGKILL of the active, and the peer's pending writes acknowledged by the backup within 3 s.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Endpoints, FailoverInfo } from '../src/index.ts';
import { forwarder, peer, readyPeer, spawnCli, waitFor, within } from './helpers.ts';
import { startPair } from './pair-fixture.ts';
import { tcpProxy, type TcpProxy } from './tcp-proxy.ts';

/** Three proxies towards a forwarder's three ports: another route to the same server. */
async function route(t: TestContext, port: number): Promise<{ endpoints: Endpoints; proxies: TcpProxy[] }> {
  const proxies = [await tcpProxy(t, port), await tcpProxy(t, port + 1), await tcpProxy(t, port + 2)];
  return { endpoints: { snapshot: proxies[0]!.endpoint, publisher: proxies[1]!.endpoint, collector: proxies[2]!.endpoint }, proxies };
}

test('a cut route moves the peer at once to the other; it resumes by delta and its pending writes are applied once', async (t) => {
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const port = Number(/:(\d+)$/.exec(fwd.endpoint)![1]);
  const a = await route(t, port);
  const b = await route(t, port);
  const p = peer(t, [a.endpoints, b.endpoints], { writeTimeout: 15_000 });
  const failovers: FailoverInfo[] = [];
  p.on('failover', (f) => failovers.push(f));
  await within('the peer joins through route A', p.ready());
  assert.equal(p.server, a.endpoints.snapshot);
  for (let i = 0; i < 20; i++) await p.set(`before/${i}`, i);

  // Writes in flight when route A is cut: some reach the forwarder and lose their answer, some
  // never get there; all are sent again through B with the same uuid.
  const writes = Array.from({ length: 200 }, (_, i) => p.set(`w/${i}`, i));
  await new Promise((r) => setImmediate(r));
  const cutAt = Date.now();
  for (const proxy of a.proxies) proxy.cut();
  await within('every write is acknowledged through route B', Promise.all(writes), 15_000);
  const elapsed = Date.now() - cutAt;
  t.diagnostic(`writes acknowledged ${elapsed} ms after the cut; failovers ${JSON.stringify(failovers)}; stats ${JSON.stringify(p.stats())}`);
  assert.equal(p.server, b.endpoints.snapshot);
  assert.deepEqual(failovers[0], { from: a.endpoints.snapshot, to: b.endpoints.snapshot, reason: 'disconnected' });
  assert.ok(elapsed < 3000, `moved at once on the dropped connection, not after silenceTimeout (${elapsed} ms)`);
  const stats = p.stats();
  assert.equal(stats.snapshots, 1, 'no full snapshot after the first join');
  assert.ok(stats.deltaSyncs >= 1, 'resumed by delta on the same epoch');

  const checker = await readyPeer(t, fwd.endpoint, { name: 'checker', presence: false });
  for (let i = 0; i < 200; i += 1) {
    const versions = await checker.history(`w/${i}`);
    assert.equal(versions.length, 1, `w/${i} applied once (${JSON.stringify(versions)})`);
  }
  await waitFor('the peer holds every write', () => p.get('w/199') === 199 && p.get('before/19') === 19);
});

test('a silent forwarder (SIGSTOP) is left after silenceTimeout; another epoch means a full resync that replaces the map', async (t) => {
  const child = spawnCli(t, ['serve', '--memory', '--port', '0', '--json', '--heartbeat', '100']);
  const first = JSON.parse(await child.line(/^\{/)) as { endpoint: string; epoch: string };
  t.after(() => void child.child.kill('SIGCONT'));
  const second = await forwarder(t, { heartbeatInterval: 100 });
  const other = await readyPeer(t, second.endpoint, { name: 'other', presence: false });
  await other.set('only/second', 2);

  const p = peer(t, `${first.endpoint},${second.endpoint}`, { silenceTimeout: 600, writeTimeout: 15_000 });
  const failovers: FailoverInfo[] = [];
  p.on('failover', (f) => failovers.push(f));
  await within('the peer joins the first forwarder', p.ready());
  await p.set('only/first', 1);
  assert.equal(p.epoch, first.epoch);

  child.child.kill('SIGSTOP');
  const stoppedAt = Date.now();
  const during = p.set('during', 3);
  await within('the write made while the first was silent is acknowledged by the second', during, 15_000);
  t.diagnostic(`acknowledged ${Date.now() - stoppedAt} ms after SIGSTOP; failovers ${JSON.stringify(failovers)}`);
  assert.deepEqual(failovers[0], { from: first.endpoint, to: second.endpoint, reason: 'silence' });
  assert.equal(p.server, second.endpoint);
  assert.equal(p.epoch, second.epoch);
  assert.equal(p.stats().snapshots, 2, 'a full snapshot at the second (another epoch)');
  assert.equal(p.has('only/first'), false, 'the map was replaced, not merged');
  assert.equal(p.get('only/second'), 2);
  await waitFor('the other peer sees the write', () => other.get('during') === 3);
});

test('default settings: a SIGKILL of the active of a real pair, pending writes are acknowledged by the other within 3 s', async (t) => {
  // The defaults everywhere: the members' heartbeat 1 s and partnerTimeout 2 s, the peer's own.
  const pair = await startPair(t, { durable: false, heartbeat: 1000, partnerTimeout: 2000 });
  const p = peer(t, pair.servers);
  await within('the peer joins through the primary', p.ready());
  await within('a first write', p.set('warm', 0));
  const writes = Array.from({ length: 50 }, (_, i) => p.set(`d/${i}`, i));
  const killedAt = Date.now();
  await pair.primary.kill();
  await within('the writes are acknowledged by the backup', Promise.all(writes), 10_000);
  const elapsed = Date.now() - killedAt;
  t.diagnostic(`acknowledged ${elapsed} ms after the kill`);
  assert.ok(elapsed < 3000, `within 3 s (${elapsed} ms)`);
  assert.equal(p.server, pair.backup.endpoint);
});
