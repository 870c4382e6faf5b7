/**
 * SIGKILL the active member of a pair under two full-speed writers, again and again (issue 9,
 * tests with real processes): the other member takes over and the peers move to it; every
 * acknowledged write is there afterwards, on the server and in every peer, with the version its
 * acknowledgement gave (so none was applied twice), and no sequence was given to two writes.
 * The killed member starts again (same command line, same data directory), rejoins as passive,
 * catches up, and is the one that takes over at the next kill.
 *
 * Topology: two `clonekv serve --primary|--backup --partner … --data DIR` child processes (see
 * pair-fixture.ts); in-process peers, each given both servers (primary first): two writers with
 * 32 writes in flight each and a reader, plus a fresh reader at the end. Failover times (kill
 * to the reader back in sync on the new active; kill to the first write queued after the kill
 * being acknowledged) are reported with t.diagnostic.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mapDigest, peer, readyPeer, waitFor, within } from './helpers.ts';
import { assertSequencesUnique, fullSpeed, startPair, wrongVersions, type Member } from './pair-fixture.ts';

const KILLS = 4;

test(`SIGKILL the active under two full-speed writers, ${KILLS} times: the partner takes over, every acknowledged write survives once, the killed one rejoins as passive`, async (t) => {
  const started = performance.now();
  // A slow link between the members (25 ms each way): the backup is always some writes behind,
  // so a write acknowledged before the backup has it would be lost at the kill.
  const pair = await startPair(t, { durable: true, heartbeat: 100, partnerTimeout: 500, proxied: true, linkDelayMs: 25 });
  const opts = { server: pair.servers, silenceTimeout: 500, heartbeatInterval: 100, snapshotRetryDelay: 50, maxRetryDelay: 200, writeTimeout: 20_000, writeRetryInterval: 200 };
  const a = peer(t, '', { ...opts, name: 'a' });
  const b = peer(t, '', { ...opts, name: 'b' });
  const reader = peer(t, '', { ...opts, name: 'reader' });
  await within('peers ready', Promise.all([a.ready(), b.ready(), reader.ready()]));
  const epoch = reader.epoch;
  const wa = fullSpeed(a, 'a', 32);
  const wb = fullSpeed(b, 'b', 32);
  const total = (): number => wa.acked.size + wb.acked.size;
  const other = (m: Member): Member => (m === pair.primary ? pair.backup : pair.primary);

  let active = pair.primary;
  const times: string[] = [];
  for (let round = 1; round <= KILLS; round++) {
    const before = total();
    await waitFor(`writes flowing before kill ${round}`, () => total() > before + 500, 10_000);
    const next = other(active);
    const killedAt = performance.now();
    await active.kill();
    // A write queued after the kill can only be acknowledged by the new active.
    const probe = a.set(`probe/${round}`, round).then(() => performance.now());
    const readAt = await waitFor(
      `the reader in sync on ${next.name} after kill ${round}`,
      () => reader.server === next.endpoint && reader.status === 'live' && performance.now(),
      10_000,
    );
    const writeAt = await within(`the probe write acknowledged after kill ${round}`, probe, 10_000);
    times.push(`kill ${round} (${active.name}): read ${Math.round(readAt - killedAt)} ms, write ${Math.round(writeAt - killedAt)} ms`);
    const after = (await next.pair())!;
    assert.equal(after.role, 'active', `${next.name} active after kill ${round}`);

    // The killed one comes back as passive and catches up while the writers go on.
    const info = await active.start();
    assert.equal(info.role, 'passive', `${active.name} restarts as passive after kill ${round}`);
    await waitFor(`writes acknowledged by ${next.name} after kill ${round}`, () => total() > before + 1000, 10_000);
    const rejoined = await pair.settled(next, 15_000, false);
    assert.ok(rejoined.active.term > 0 && rejoined.active.term === rejoined.passive.term, `one term on both after kill ${round}`);
    assert.equal(rejoined.passive.configured, active.name);
    active = next;
  }
  await within('writers stopped', Promise.all([wa.stop(), wb.stop()]), 25_000);
  const acked = new Map([...wa.acked, ...wb.acked]);
  t.diagnostic(times.join('; '));
  t.diagnostic(`acknowledged ${acked.size}, failed ${wa.failed() + wb.failed()}, failovers a/b/reader ${[a, b, reader].map((p) => p.stats().failovers).join('/')}`);
  assert.ok(acked.size > 4000, `acknowledged ${acked.size}`);
  assertSequencesUnique(acked);

  // Both members agree once the writers stop: one term, one sequence, the passive at lag 0.
  const final = await pair.settled(active, 10_000);
  assert.equal(final.passive.replication.sequence, final.active.replication.sequence);

  // On the server: a fresh peer's snapshot holds every acknowledged write, at its version.
  const fresh = await readyPeer(t, '', { server: pair.servers, presence: false });
  assert.equal(fresh.server, active.endpoint);
  const wrong = wrongVersions(fresh, acked);
  assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} acknowledged writes missing or rewritten on the server`);
  // In every peer, same epoch all along (a failover resumes, it does not start a new history).
  for (const [name, p] of Object.entries({ a, b, reader })) {
    await waitFor(`${name} holds every acknowledged write at its version`, () => wrongVersions(p, acked).length === 0, 10_000);
    await waitFor(`${name} equal to the server`, () => mapDigest(p) === mapDigest(fresh), 10_000);
    assert.equal(p.epoch, epoch, `${name} kept the epoch`);
    assert.ok(p.stats().failovers >= KILLS, `${name} failed over ${p.stats().failovers} times`);
  }
  assert.equal(fresh.epoch, epoch);
  t.diagnostic(`test time ${Math.round(performance.now() - started)} ms`);
});
