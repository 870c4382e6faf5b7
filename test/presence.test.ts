/**
 * Presence and owned keys, with real processes. Topology: an in-process Forwarder on an
 * ephemeral port triple; peers in child processes (killed with SIGKILL, or closed cleanly by
 * ending their stdin) that own keys; in-process observer Peers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { childPeer, forwarder, readyPeer, runCli, waitFor, within } from './helpers.ts';

const BEAT = 200; // peers' heartbeat interval in these tests, ms

/** A presence value as the forwarder writes it. */
interface PresenceValue {
  id: string;
  name: string;
  subtree: string;
  since: string;
}

/**
 * Checks a presence value: exactly these fields, the given id, name and subtree, and `since` an
 * ISO-8601 UTC time between `after` (taken before the peer started) and now.
 */
function assertPresence(value: unknown, expected: { id: string; name: string; subtree: string }, after: number): void {
  const v = value as PresenceValue;
  assert.deepEqual(Object.keys(v).sort(), ['id', 'name', 'since', 'subtree']);
  assert.deepEqual({ id: v.id, name: v.name, subtree: v.subtree }, expected);
  assert.match(v.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const since = Date.parse(v.since);
  assert.ok(since >= after && since <= Date.now(), `since ${v.since} is between the peer's start (${new Date(after).toISOString()}) and now`);
}

/** Ten beats of slack: a live peer in a loaded process that misses a few beats stays present. */
const PEER_TIMEOUT = 10 * BEAT;

test('keys owned by a peer killed with SIGKILL are deleted everywhere once its heartbeats stop', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: PEER_TIMEOUT });
  const started = Date.now();
  const owner = await childPeer(t, fwd.endpoint, { heartbeatInterval: BEAT, name: 'doomed' });
  // The observers do not announce themselves: a late beat of theirs (1 s by default, against a
  // 2 s peerTimeout) must not add their presence keys to the purge counter checked below.
  const observers = [await readyPeer(t, fwd.endpoint, { presence: false }), await readyPeer(t, fwd.endpoint, { subtree: 'locks/', presence: false })];
  const presence = await readyPeer(t, fwd.endpoint, { subtree: '$peers/', presence: false });
  for (const key of ['locks/a', 'locks/b']) {
    await owner.ask(`set ${key} "held" ephemeral`, (o) => (o.set === key ? o : undefined));
  }
  await owner.ask('set plain/kept 1', (o) => (o.set === 'plain/kept' ? o : undefined));
  for (const o of observers) await waitFor('owned keys visible', () => o.has('locks/a') && o.has('locks/b'));
  await waitFor('owner present', () => presence.has(`$peers/${owner.id}`));
  assertPresence(presence.get(`$peers/${owner.id}`), { id: owner.id, name: 'doomed', subtree: '' }, started);

  const reasons: string[] = [];
  observers[0]!.on('update', (e) => e.operation === 'delete' && reasons.push(`${e.key}:${e.reason}`));
  const killedAt = Date.now();
  owner.child.kill('SIGKILL');
  // How soon depends on the machine's load; that it happens, with no clean close, is the promise
  // (bench/ measures speeds). The deadline is only there so that a failure ends the test.
  for (const o of observers) await waitFor('owned keys purged', () => !o.has('locks/a') && !o.has('locks/b'), 15_000);
  t.diagnostic(`owned keys purged ${Date.now() - killedAt} ms after SIGKILL (peerTimeout ${PEER_TIMEOUT} ms)`);
  assert.deepEqual(reasons.sort(), ['locks/a:purged', 'locks/b:purged']);
  assert.equal(observers[0]!.get('plain/kept'), 1, 'keys written without ephemeral stay');
  assert.equal(observers[1]!.size, 0, 'the locks/ peer holds nothing more');
  await waitFor('presence key removed', () => !presence.has(`$peers/${owner.id}`));
  assert.equal(fwd.stats().purged, 3, 'the two owned keys and the presence key');
  assert.equal(fwd.stats().peers, 0);
});

test('a clean close deletes owned keys at once; a plain overwrite ends ownership', async (t) => {
  // A peer timeout far beyond the test's deadlines: only the clean close can delete the keys.
  const fwd = await forwarder(t, { peerTimeout: 120_000 });
  const owner = await childPeer(t, fwd.endpoint, { heartbeatInterval: BEAT });
  const observer = await readyPeer(t, fwd.endpoint);
  await owner.ask('set svc/leader "me" ephemeral', (o) => (o.set === 'svc/leader' ? o : undefined));
  await owner.ask('set svc/taken "mine" ephemeral', (o) => (o.set === 'svc/taken' ? o : undefined));
  await waitFor('owned keys visible', () => observer.has('svc/leader') && observer.has('svc/taken'));
  await observer.set('svc/taken', 'someone else now');
  const reasons: string[] = [];
  observer.on('update', (e) => e.operation === 'delete' && reasons.push(`${e.key}:${e.reason}`));
  owner.child.stdin!.end(); // the child closes its peer cleanly
  await waitFor('leader deleted on clean close', () => !observer.has('svc/leader'), 15_000);
  assert.deepEqual(reasons, ['svc/leader:purged']);
  assert.equal(observer.get('svc/taken'), 'someone else now');
  assert.equal(fwd.peers().some((m) => m.id === owner.id), false, 'the closed peer left the presence table');
});

test('presence: clonekv peers lists live peers; a service can watch who is present', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: PEER_TIMEOUT });
  const watcher = await readyPeer(t, fwd.endpoint, { subtree: '$peers/', heartbeatInterval: BEAT });
  const joined: string[] = [];
  const left: string[] = [];
  watcher.on('update', (e) => (e.operation === 'put' ? joined : left).push(e.key));
  const started = Date.now();
  const member = await childPeer(t, fwd.endpoint, { heartbeatInterval: BEAT, name: 'member-1', subtree: 'cfg/' });
  await waitFor('member joined', () => joined.includes(`$peers/${member.id}`));
  assertPresence(watcher.get(`$peers/${member.id}`), { id: member.id, name: 'member-1', subtree: 'cfg/' }, started);
  const listed = await runCli(['peers', '--json', '--server', fwd.endpoint]);
  assert.equal(listed.code, 0, listed.stderr);
  const list = JSON.parse(listed.stdout) as PresenceValue[];
  // Exactly the two live peers (the CLI leaves itself out), as the watcher holds them.
  assert.deepEqual(list.map((p) => p.id).sort(), [member.id, watcher.id].sort(), listed.stdout);
  for (const p of list) assert.deepEqual(p, watcher.get(`$peers/${p.id}`));
  assertPresence(list.find((p) => p.id === watcher.id), { id: watcher.id, name: 'peer', subtree: '$peers/' }, 0);
  member.child.kill('SIGKILL');
  await waitFor('member left', () => left.includes(`$peers/${member.id}`), 15_000);
  assert.equal(watcher.has(`$peers/${member.id}`), false);
  // Presence keys are metadata: a full-tree peer does not hold them, and peers cannot write them.
  const full = await readyPeer(t, fwd.endpoint);
  assert.equal([...full.keys()].some((k) => k.startsWith('$peers/')), false);
  await assert.rejects(full.set('$peers/fake', 1), { code: 'CLONEKV_INVALID_KEY' });
});

test('forwarder counters are exposed by the library and by clonekv stats', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  await p.set('a', 1);
  await assert.rejects(p.set('a', 2, { ifVersion: 0 }), { code: 'CLONEKV_CONFLICT' });
  // What happened so far: two sequenced updates (the peer's presence key, then a), one conflict,
  // nothing else refused, expired, purged or dropped; one snapshot served (the peer's join).
  const expected = { sequence: 2, keys: 2, published: 2, conflicts: 1, duplicates: 0, rejected: 0, malformed: 0, expired: 0, purged: 0, dropped: 0, peers: 1 };
  const pick = (o: object) => Object.fromEntries(Object.keys(expected).map((k) => [k, (o as Record<string, unknown>)[k]]));
  assert.deepEqual(pick(fwd.stats()), expected);
  assert.equal(fwd.stats().snapshots, 1);
  const viaPeer = await within('server stats', p.serverStats());
  assert.deepEqual(pick(viaPeer), expected);
  assert.equal(viaPeer.epoch, fwd.epoch);
  const out = await runCli(['stats', '--json', '--server', fwd.endpoint]);
  assert.equal(out.code, 0, out.stderr);
  const s = JSON.parse(out.stdout) as Record<string, unknown>;
  assert.deepEqual(pick(s), expected, 'the CLI (which does not announce itself) sees the same');
  assert.equal(s.snapshots, 1, "the peer's join only: the CLI asks without joining");
  assert.equal(s.epoch, fwd.epoch);
  assert.equal(s.server, fwd.endpoint);
  assert.deepEqual(s.malformedBy, fwd.stats().malformedBy);
  assert.ok(Object.values(s.malformedBy as Record<string, number>).every((n) => n === 0));
  const ps = p.stats();
  // The peer joined once, applied its own write once, and wrote twice (one write conflicted).
  assert.deepEqual(
    { snapshots: ps.snapshots, resyncs: ps.resyncs, gaps: ps.gaps, malformed: ps.malformed, updates: ps.updates, writes: ps.writes, sequence: ps.sequence },
    { snapshots: 1, resyncs: 0, gaps: 0, malformed: 0, updates: 1, writes: 2, sequence: 2 },
  );
});
