/**
 * Item 16: an owner learns that it lost its keys. The forwarder tells a peer id it registers
 * (first beat, or a beat after a purge) `KVPRESENT` with `owner=<id>` and `since=<ms>`; a peer
 * that sees `since` change knows it was purged, with every key it owned, and emits
 * `ownershipLost`.
 *
 * Topologies: (1) a scripted forwarder (raw ROUTER + XPUB on 127.0.0.1, test/fake-forwarder.ts)
 * and one in-process Peer; (2) an in-process Forwarder, a writer Peer in its own process
 * (test/fixtures/writer-child.ts) that the test stops with SIGSTOP past `peerTimeout`, and an
 * in-process observer Peer.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { Peer } from '../src/index.ts';
import { FakeForwarder } from './fake-forwarder.ts';
import { childPeer, forwarder, readyPeer, waitFor, within, WRITER_CHILD } from './helpers.ts';

test('KVPRESENT with a new since makes the peer emit ownershipLost, once, with both times', async (t) => {
  const fake = await FakeForwarder.start(t);
  const p = new Peer({ server: fake.endpoints, heartbeatInterval: 50 });
  t.after(() => p.close());
  const id = (await fake.next('ICANHAZ?'))[0]!;
  await fake.snapshotEnd(id, 0);
  await within('ready', p.ready());
  const beat = await fake.next('KVBEAT');
  assert.match(beat[4]!.toString(), new RegExp(`owner=${p.id}\n`));
  const lost: Array<{ since: number; previousSince: number }> = [];
  p.on('ownershipLost', (info) => lost.push(info));
  const present = (owner: string, since: string): Promise<void> => fake.reply(beat[0]!, 'KVPRESENT', 0, Buffer.from(`owner=${owner}\nsince=${since}\n`));
  const malformed = p.stats().malformed;
  await present(p.id, '1000'); // first registration: remembered, not a loss
  await present(p.id, '1000'); // the same registration told again
  await present('0123456789abcdef', '5000'); // someone else's
  await present(p.id, 'soon'); // malformed: dropped and counted
  await waitFor('the malformed one counted', () => p.stats().malformed === malformed + 1, 5000);
  assert.deepEqual(lost, []);
  const event = once(p, 'ownershipLost');
  await present(p.id, '2000'); // registered anew: it had been purged
  const [info] = (await within('ownershipLost', event)) as [{ since: number; previousSince: number }];
  assert.deepEqual(info, { since: 2000, previousSince: 1000 });
  await present(p.id, '2000');
  // A later, different registration is another loss, measured from the last one.
  const again = once(p, 'ownershipLost');
  await present(p.id, '3000');
  assert.deepEqual((await within('second ownershipLost', again))[0], { since: 3000, previousSince: 2000 });
  assert.equal(lost.length, 2);
});

test('a peer paused past peerTimeout learns, when it resumes, that its keys were purged', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: 300 });
  const observer = await readyPeer(t, fwd.endpoint);
  const owner = await childPeer(t, fwd.endpoint, { heartbeatInterval: 50 }, WRITER_CHILD);
  const seq = await owner.ask('set lock/a "mine" ephemeral', (o) => (o.set === 'lock/a' ? (o.seq as number) : undefined));
  assert.ok(seq > 0);
  await waitFor('observer sees the lock', () => observer.get('lock/a') === 'mine');
  owner.child.kill('SIGSTOP');
  await waitFor('the forwarder purged the owner and its lock', () => !observer.has('lock/a'), 10_000);
  owner.child.kill('SIGCONT');
  const info = await owner.ask('noop', (o) => o.ownershipLost as { since: number; previousSince: number } | undefined, 10_000);
  assert.ok(info.since > info.previousSince, JSON.stringify(info));
  // Re-taking ownership as the README says: create-if-absent, owned.
  const again = await owner.ask('set lock/a "again" ephemeral', (o) => (o.set === 'lock/a' ? o : undefined));
  assert.ok(typeof again.seq === 'number', JSON.stringify(again));
  await waitFor('observer sees the lock again', () => observer.get('lock/a') === 'again');
});
