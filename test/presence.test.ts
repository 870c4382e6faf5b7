/**
 * Presence and owned keys, with real processes. Topology: an in-process Forwarder on an
 * ephemeral port triple; peers in child processes (killed with SIGKILL, or closed cleanly by
 * ending their stdin) that own keys; in-process observer Peers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { childPeer, forwarder, readyPeer, runCli, waitFor, within } from './helpers.ts';

const BEAT = 200; // peers' heartbeat interval in these tests, ms

test('keys owned by a peer killed with SIGKILL are deleted everywhere within 3 heartbeat intervals', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: 3 * BEAT });
  const owner = await childPeer(t, fwd.endpoint, { heartbeatInterval: BEAT, name: 'doomed' });
  const observers = [await readyPeer(t, fwd.endpoint), await readyPeer(t, fwd.endpoint, { subtree: 'locks/' })];
  const presence = await readyPeer(t, fwd.endpoint, { subtree: '$peers/' });
  for (const key of ['locks/a', 'locks/b']) {
    await owner.ask(`set ${key} "held" ephemeral`, (o) => (o.set === key ? o : undefined));
  }
  await owner.ask('set plain/kept 1', (o) => (o.set === 'plain/kept' ? o : undefined));
  for (const o of observers) await waitFor('owned keys visible', () => o.has('locks/a') && o.has('locks/b'));
  await waitFor('owner present', () => presence.has(`$peers/${owner.id}`));
  assert.equal((presence.get(`$peers/${owner.id}`) as { name: string }).name, 'doomed');

  const reasons: string[] = [];
  observers[0]!.on('update', (e) => e.operation === 'delete' && reasons.push(`${e.key}:${e.reason}`));
  const killedAt = Date.now();
  owner.child.kill('SIGKILL');
  for (const o of observers) await waitFor('owned keys purged', () => !o.has('locks/a') && !o.has('locks/b'), 5000);
  const elapsed = Date.now() - killedAt;
  // The last beat came at most one interval before the kill; the forwarder checks every
  // peerTimeout/4: 3 intervals plus that check period plus delivery.
  assert.ok(elapsed <= 3 * BEAT + 3 * BEAT / 4 + 150, `purged after ${elapsed} ms`);
  assert.deepEqual(reasons.sort(), ['locks/a:purged', 'locks/b:purged']);
  assert.equal(observers[0]!.get('plain/kept'), 1, 'keys written without ephemeral stay');
  await waitFor('presence key removed', () => !presence.has(`$peers/${owner.id}`));
  assert.equal(fwd.stats().purged >= 2, true);
});

test('a clean close deletes owned keys at once; a plain overwrite ends ownership', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: 30_000 });
  const owner = await childPeer(t, fwd.endpoint, { heartbeatInterval: BEAT });
  const observer = await readyPeer(t, fwd.endpoint);
  await owner.ask('set svc/leader "me" ephemeral', (o) => (o.set === 'svc/leader' ? o : undefined));
  await owner.ask('set svc/taken "mine" ephemeral', (o) => (o.set === 'svc/taken' ? o : undefined));
  await waitFor('owned keys visible', () => observer.has('svc/leader') && observer.has('svc/taken'));
  await observer.set('svc/taken', 'someone else now');
  const closedAt = Date.now();
  owner.child.stdin!.end(); // the child closes its peer cleanly
  await waitFor('leader deleted on clean close', () => !observer.has('svc/leader'), 5000);
  assert.ok(Date.now() - closedAt < 5000, 'long before the 30 s peer timeout');
  assert.equal(observer.get('svc/taken'), 'someone else now');
});

test('presence: clonekv peers lists live peers; a service can watch who is present', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: 3 * BEAT });
  const watcher = await readyPeer(t, fwd.endpoint, { subtree: '$peers/', heartbeatInterval: BEAT });
  const joined: string[] = [];
  const left: string[] = [];
  watcher.on('update', (e) => (e.operation === 'put' ? joined : left).push(e.key));
  const member = await childPeer(t, fwd.endpoint, { heartbeatInterval: BEAT, name: 'member-1', subtree: 'cfg/' });
  await waitFor('member joined', () => joined.includes(`$peers/${member.id}`));
  const listed = await runCli(['peers', '--json', '--server', fwd.endpoint]);
  assert.equal(listed.code, 0, listed.stderr);
  const list = JSON.parse(listed.stdout) as Array<{ id: string; name: string; subtree: string }>;
  assert.ok(list.some((p) => p.id === member.id && p.name === 'member-1' && p.subtree === 'cfg/'), listed.stdout);
  member.child.kill('SIGKILL');
  await waitFor('member left', () => left.includes(`$peers/${member.id}`), 5000);
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
  const viaPeer = await within('server stats', p.serverStats());
  assert.equal(viaPeer.conflicts, 1);
  assert.equal(viaPeer.epoch, fwd.epoch);
  const out = await runCli(['stats', '--json', '--server', fwd.endpoint]);
  assert.equal(out.code, 0, out.stderr);
  const s = JSON.parse(out.stdout) as Record<string, number>;
  for (const k of ['sequence', 'keys', 'peers', 'published', 'duplicates', 'conflicts', 'malformed', 'expired', 'purged', 'dropped', 'snapshots']) {
    assert.equal(typeof s[k], 'number', `stats has ${k}`);
  }
  assert.equal(s.conflicts, 1);
  const ps = p.stats();
  for (const k of ['gaps', 'resyncs', 'malformed', 'updates', 'snapshots'] as const) assert.equal(typeof ps[k], 'number');
});
