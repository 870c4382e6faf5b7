/**
 * Forwarder restarts, with real processes. Topology: `clonekv serve` child processes bound to
 * one port triple on 127.0.0.1 (the second started on the same ports after the first is killed
 * with SIGKILL); in-process Peers connected to it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { WatchEntry } from '../src/index.ts';
import { contents, peer, spawnCli, waitFor, within } from './helpers.ts';
import { tcpProxy } from './tcp-proxy.ts';

async function serve(t: Parameters<typeof spawnCli>[0], port: number, heartbeat = 100) {
  const proc = spawnCli(t, ['serve', '--memory', '--port', String(port), '--json', '--heartbeat', String(heartbeat)]);
  const info = JSON.parse(await proc.line(/^\{/)) as { endpoint: string; epoch: string };
  return { ...proc, ...info, port: Number(info.endpoint.split(':').at(-1)) };
}

async function kill(proc: { child: import('node:child_process').ChildProcess }): Promise<void> {
  proc.child.kill('SIGKILL');
  await once(proc.child, 'exit');
}

test('a forwarder restarted on the same ports is detected and every peer resyncs to the new state', async (t) => {
  const first = await serve(t, 0);
  const opts = { silenceTimeout: 1000, snapshotRetryDelay: 100, maxRetryDelay: 500 };
  const writer = peer(t, first.endpoint, opts);
  const full = peer(t, first.endpoint, opts);
  const sub = peer(t, first.endpoint, { ...opts, subtree: 'app/' });
  await within('peers ready', Promise.all([writer.ready(), full.ready(), sub.ready()]));
  await writer.set('app/old', 'before restart');
  await writer.set('other/old', 1);
  await waitFor('old state everywhere', () => full.has('other/old') && sub.has('app/old'));
  const events: WatchEntry[] = [];
  sub.on('update', (e) => events.push(e));
  const resyncs: string[] = [];
  full.on('resync', ({ reason }) => resyncs.push(reason));

  await kill(first);
  const second = await serve(t, first.port);
  assert.notEqual(second.epoch, first.epoch);
  // The new forwarder starts empty; a write to it must reach every peer, and the old keys
  // must disappear (a resync replaces, never merges: reference failure 4).
  await waitFor('peers on the new epoch', () => [writer, full, sub].every((p) => p.epoch === second.epoch && p.status === 'live'), 15_000);
  await writer.set('app/new', 'after restart');
  // Read-your-writes holds at once, across the restart (item 5): no polling here.
  assert.equal(writer.get('app/new'), 'after restart');
  await waitFor('new state everywhere', () => full.has('app/new') && sub.has('app/new'));
  assert.deepEqual(contents(full), { 'app/new': 'after restart' });
  assert.deepEqual(contents(sub), { 'app/new': 'after restart' });
  assert.deepEqual(contents(writer), { 'app/new': 'after restart' });
  assert.ok(resyncs.length > 0 && resyncs.every((r) => ['epoch', 'silence', 'sequence'].includes(r)), `resync reasons: ${resyncs}`);
  // Watchers saw the change as an ordinary delete, then the new key.
  assert.deepEqual(
    events.map((e) => [e.key, e.operation]),
    [
      ['app/old', 'delete'],
      ['app/new', 'put'],
    ],
  );
});

test('a write pending while the forwarder is down is retried with the same uuid and applied once', async (t) => {
  const first = await serve(t, 0);
  const p = peer(t, first.endpoint, { silenceTimeout: 500, snapshotRetryDelay: 100, maxRetryDelay: 300, writeTimeout: 20_000, writeRetryInterval: 100 });
  await within('ready', p.ready());
  await kill(first);
  const pending = p.set('survives', 'the outage');
  const second = await serve(t, first.port);
  let readAtResolve: unknown;
  const seq = await within(
    'pending write sequenced by the new forwarder',
    pending.then((s) => ((readAtResolve = p.get('survives')), s)),
    15_000,
  );
  // Read-your-writes the moment the write resolves (item 5), not eventually.
  assert.equal(readAtResolve, 'the outage');
  // Applied exactly once however often it was sent.
  const reader = peer(t, second.endpoint);
  await within('reader ready', reader.ready());
  assert.deepEqual(contents(reader), { survives: 'the outage' });
  // Had a retry been applied again after the acknowledgement, the key would carry a later version.
  assert.equal(reader.version('survives'), seq);
});

test('a peer started before its forwarder keeps asking and syncs once the forwarder is up', async (t) => {
  // Reference failure 7: the guide's client asks each server at most twice, then stalls.
  const probe = await serve(t, 0);
  const port = probe.port;
  await kill(probe); // a port triple known to be free now
  const p = peer(t, `tcp://127.0.0.1:${port}`, { snapshotRetryDelay: 20, maxRetryDelay: 50 });
  await waitFor('several unanswered snapshot requests', () => p.stats().snapshotRequests >= 5, 5000);
  assert.equal(p.status, 'syncing');
  const late = await serve(t, port);
  await within('ready once the forwarder is up', p.ready(), 10_000);
  assert.equal(p.epoch, late.epoch);
});

test('a peer whose forwarder goes silent keeps serving its last state, marked stale', async (t) => {
  const first = await serve(t, 0);
  const p = peer(t, first.endpoint, { silenceTimeout: 300, snapshotRetryDelay: 100, maxRetryDelay: 200 });
  await within('ready', p.ready());
  await p.set('kept', 'while down');
  await kill(first);
  await waitFor('stale status', () => p.status === 'stale', 5000);
  assert.equal(p.get('kept'), 'while down', 'reads still answer from the last known state');
  assert.deepEqual([...p.keys()], ['kept']);
});

test('a write sequenced by a restarted forwarder resolves only once the peer holds it in that run (read-your-writes)', async (t) => {
  // Topology: `clonekv serve` children on one port triple; the writer's SUB goes through a
  // cuttable proxy, its DEALER straight to the forwarder. While the SUB is cut, the writer cannot
  // hear that the forwarder restarted, but its write is sequenced (and acknowledged) by the new
  // run, with a sequence far below the old run's: that acknowledgement must not count as "the
  // local map has reached it".
  const first = await serve(t, 0);
  const proxy = await tcpProxy(t, first.port + 1);
  const server = { snapshot: first.endpoint, publisher: proxy.endpoint, collector: `tcp://127.0.0.1:${first.port + 2}` };
  const p = peer(t, first.endpoint, { server, silenceTimeout: 10_000, snapshotRetryDelay: 100, maxRetryDelay: 500, writeTimeout: 20_000, writeRetryInterval: 100 });
  await within('ready', p.ready());
  for (let i = 0; i < 40; i++) await p.set('k', `old ${i}`);
  assert.equal(p.get('k'), 'old 39');
  proxy.cut();
  await kill(first);
  const second = await serve(t, first.port);
  let readAtResolve: unknown = 'unresolved';
  const write = p.set('k', 'new').then((seq) => {
    readAtResolve = p.get('k');
    return seq;
  });
  // Wait until the new run has sequenced the write (a reader straight on it sees the value): the
  // acknowledgement is on its way to the writer, whose subscription is still cut.
  const reader = peer(t, second.endpoint);
  await within('reader ready', reader.ready());
  await waitFor('the new run has the write', () => reader.get('k') === 'new', 15_000);
  proxy.restore();
  const seq = await within('the write resolves', write, 15_000);
  assert.equal(readAtResolve, 'new', 'the writer read its own write when the write resolved');
  assert.equal(p.epoch, second.epoch);
  assert.equal(p.version('k'), seq);
});
