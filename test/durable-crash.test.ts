/**
 * A durable forwarder killed with SIGKILL under load, five times (issue 8, tests with real
 * processes): every write whose promise resolved is there afterwards, in the forwarder and in
 * every peer, and the epoch never changes. An async-mode forwarder killed the same way takes a
 * new epoch (peers may hold updates it lost), a cleanly stopped one keeps it.
 *
 * Topology: `clonekv serve --data DIR` child processes (one process each: bin/clonekv.js runs
 * the sources in-process), the next one started on the same port triple after the last one is
 * killed; in-process Peers: two writers at full speed (many writes in flight each) and a reader
 * that lives through every restart, plus a fresh reader at the end.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test, type TestContext } from 'node:test';
import { dataDir, fullSpeed, mapDigest, peer, readyPeer, spawnCli, waitFor, within } from './helpers.ts';

async function serve(t: TestContext, dir: string, port: number, extra: string[] = []) {
  const proc = spawnCli(t, ['serve', '--data', dir, '--port', String(port), '--json', '--heartbeat', '100', ...extra]);
  const info = JSON.parse(await proc.line(/^\{/)) as { endpoint: string; epoch: string };
  return { ...proc, ...info, port: Number(info.endpoint.split(':').at(-1)) };
}

async function kill(proc: { child: import('node:child_process').ChildProcess }): Promise<void> {
  proc.child.kill('SIGKILL');
  await once(proc.child, 'exit');
}

test('SIGKILL under two full-speed writers, five times: every acknowledged write survives everywhere, the epoch never changes', async (t) => {
  const dir = dataDir(t);
  let fwd = await serve(t, dir, 0);
  const { epoch, port } = fwd;
  const opts = { silenceTimeout: 600, snapshotRetryDelay: 50, maxRetryDelay: 300, writeTimeout: 20_000, writeRetryInterval: 200 };
  const a = peer(t, fwd.endpoint, { ...opts, name: 'a' });
  const b = peer(t, fwd.endpoint, { ...opts, name: 'b' });
  const reader = peer(t, fwd.endpoint, { ...opts, name: 'reader' });
  await within('peers ready', Promise.all([a.ready(), b.ready(), reader.ready()]));
  const wa = fullSpeed(a, 'a', 32);
  const wb = fullSpeed(b, 'b', 32);
  const total = (): number => wa.acked.size + wb.acked.size;

  for (let round = 1; round <= 5; round++) {
    const before = total();
    await waitFor(`writes flowing before kill ${round}`, () => total() > before + 1000, 15_000);
    await kill(fwd);
    fwd = await serve(t, dir, port);
    assert.equal(fwd.epoch, epoch, `restart ${round} keeps the epoch`);
  }
  const before = total();
  await waitFor('writes flowing after the last restart', () => total() > before + 1000, 15_000);
  await within('writers stopped', Promise.all([wa.stop(), wb.stop()]), 25_000);
  const acked = new Map([...wa.acked, ...wb.acked]);
  assert.ok(acked.size > 6000, `acknowledged ${acked.size}`);

  // In the forwarder: a fresh peer's snapshot holds every acknowledged write.
  const fresh = await readyPeer(t, fwd.endpoint, { presence: false });
  // `acked` maps each key (`name/i`, value i, written once) to the sequence its acknowledgement
  // gave: the value must be there at exactly that version (a later one: applied twice).
  const valueOf = (k: string): number => Number(k.slice(k.indexOf('/') + 1));
  const missing = [...acked].filter(([k]) => fresh.get(k) !== valueOf(k)).map(([k]) => k);
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} acknowledged writes missing in the forwarder`);
  const twice = [...acked].filter(([k, seq]) => fresh.version(k) !== seq).map(([k]) => k);
  assert.deepEqual(twice.slice(0, 10), [], `${twice.length} acknowledged writes not at the version their acknowledgement gave`);
  // In every peer, on the same epoch.
  const peers = { a, b, reader };
  for (const [name, p] of Object.entries(peers)) {
    await waitFor(`${name} holds every acknowledged write`, () => [...acked].every(([k]) => p.get(k) === valueOf(k)), 15_000);
    assert.equal(p.epoch, epoch);
    // And nothing the forwarder lacks: no peer was ever given an update the disk did not hold.
    await waitFor(`${name} equal to the forwarder`, () => mapDigest(p) === mapDigest(fresh), 15_000);
  }
  // Resume by delta: after its first join, no peer needed a full snapshot across five restarts.
  for (const [name, p] of Object.entries(peers)) {
    const s = p.stats();
    assert.equal(s.snapshots, 1, `${name}: ${s.snapshots} full snapshots, ${s.deltaSyncs} delta syncs`);
    assert.ok(s.deltaSyncs >= 1, `${name} resumed by delta (${s.deltaSyncs})`);
  }
  t.diagnostic(`acknowledged ${acked.size}, failed ${wa.failed() + wb.failed()}, peer snapshots ${Object.values(peers).map((p) => p.stats().snapshots).join('/')}, delta syncs ${Object.values(peers).map((p) => p.stats().deltaSyncs).join('/')}`);
});

test('async durability: SIGKILL makes a new epoch (peers resync), a clean stop keeps it', async (t) => {
  const dir = dataDir(t);
  const first = await serve(t, dir, 0, ['--durability', 'async']);
  const p = await readyPeer(t, first.endpoint, { silenceTimeout: 600, snapshotRetryDelay: 50, maxRetryDelay: 300 });
  await p.set('kept', 1);
  await kill(first);
  const second = await serve(t, dir, first.port, ['--durability', 'async']);
  assert.notEqual(second.epoch, first.epoch, 'after a crash in async mode: a new epoch');
  await waitFor('the peer on the new epoch', () => p.epoch === second.epoch && p.status === 'live', 15_000);
  second.child.kill('SIGTERM');
  await once(second.child, 'exit');
  const third = await serve(t, dir, first.port, ['--durability', 'async']);
  assert.equal(third.epoch, second.epoch, 'after a clean stop: the same epoch');
});
