/**
 * Presence as the forwarder keeps it (issue 7, items 16 and 17), with a raw DEALER playing a
 * clonekv peer. The wire contract the peer relies on: when the forwarder registers a peer id
 * anew (its first beat, or a beat after that id was purged, or the first beat of an id first
 * seen as the owner of a write), it answers on the ROUTER, to that DEALER, with
 * `[KVPRESENT, sequence of the presence key written at registration, empty uuid,
 * "owner=<id>\nsince=<ms>\n", empty body]`, and with nothing on later beats.
 *
 * Topology: a Forwarder (ROUTER P, XPUB P+1, SUB P+2); a raw DEALER (routing id "ckv1…") on P;
 * a clonekv Peer on subtree `$peers/` (no presence of its own; full-tree peers hide it).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { forwarder, readyPeer, waitFor } from './helpers.ts';
import { EMPTY, propMap, rawDealer, ZERO_SEQ } from './raw-sockets.ts';

test('KVPRESENT answers the first beat of each registration, and only that one', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: 100 });
  const reader = await readyPeer(t, fwd.endpoint, { presence: false, name: 'reader', subtree: '$peers/' });
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  const id = randomBytes(8).toString('hex');
  const beat = (name = 'raw'): Promise<void> =>
    dealer.send([Buffer.from('KVBEAT'), ZERO_SEQ, EMPTY, Buffer.from(`owner=${id}\nname=${name}\nsubtree=\napplied=0\n`), EMPTY]);
  /** The next reply, after a KVSTATS round trip proves nothing else was sent before it. */
  const nextReply = async (): Promise<Buffer[]> => inbox.next('a reply');
  const nothingPending = async (): Promise<void> => {
    await dealer.send([Buffer.from('KVSTATS'), ZERO_SEQ, EMPTY, EMPTY, EMPTY]);
    assert.equal((await nextReply())[0]!.toString(), 'KVSTATS', 'no KVPRESENT was sent before');
  };

  const t0 = Date.now();
  await beat();
  const present = await nextReply();
  assert.equal(present.length, 5);
  assert.equal(present[0]!.toString(), 'KVPRESENT');
  assert.equal(present[2]!.length, 0, 'empty uuid');
  assert.equal(present[4]!.length, 0, 'empty body');
  const p1 = propMap(present[3]!);
  assert.equal(present[3]!.toString(), `owner=${id}\nsince=${p1.get('since')}\n`);
  const since1 = Number(p1.get('since'));
  assert.ok(since1 >= t0 && since1 <= Date.now());
  const seq1 = Number(present[1]!.readBigInt64BE());
  await waitFor('the presence key at the reader', () => reader.has(`$peers/${id}`));
  assert.equal(reader.version(`$peers/${id}`), seq1, 'the sequence is that of the presence key');

  await beat();
  await nothingPending();

  // Silent past peerTimeout: purged. The next beat is a new registration.
  await waitFor('the purge', () => !reader.has(`$peers/${id}`));
  await beat();
  const again = await nextReply();
  assert.equal(again[0]!.toString(), 'KVPRESENT');
  const seq2 = Number(again[1]!.readBigInt64BE());
  assert.ok(seq2 > seq1);
  assert.ok(Number(propMap(again[3]!).get('since')) >= since1);
  await waitFor('the new presence key', () => reader.version(`$peers/${id}`) === seq2);
});

test('an owner first seen in a write is "unknown" until its first beat, which names it and gets KVPRESENT', async (t) => {
  const fwd = await forwarder(t, { peerTimeout: 60_000 });
  const reader = await readyPeer(t, fwd.endpoint, { presence: false, name: 'reader', subtree: '$peers/' });
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  const id = randomBytes(8).toString('hex');

  await dealer.send([Buffer.from('lock/a'), ZERO_SEQ, randomBytes(16), Buffer.from(`owner=${id}\n`), Buffer.from('held')]);
  const ack = await inbox.next('the KVACK');
  assert.equal(ack[0]!.toString(), 'KVACK');
  const writeSeq = Number(ack[1]!.readBigInt64BE());
  await waitFor('the provisional presence key', () => reader.has(`$peers/${id}`));
  assert.equal((reader.get(`$peers/${id}`) as { name: string }).name, 'unknown');
  const registered = reader.version(`$peers/${id}`) ?? 0;
  assert.ok(registered < writeSeq, 'registered before the write it owns');

  await dealer.send([Buffer.from('KVBEAT'), ZERO_SEQ, EMPTY, Buffer.from(`owner=${id}\nname=svc\nsubtree=${Buffer.from('app/').toString('base64url')}\n`), EMPTY]);
  const present = await inbox.next('KVPRESENT');
  assert.equal(present[0]!.toString(), 'KVPRESENT');
  assert.equal(Number(present[1]!.readBigInt64BE()), registered, 'the sequence of the registration, not of the rename');
  await waitFor('the renamed presence key', () => (reader.get(`$peers/${id}`) as { name?: string } | undefined)?.name === 'svc');
  assert.deepEqual(reader.get(`$peers/${id}`), { id, name: 'svc', subtree: 'app/', since: (reader.get(`$peers/${id}`) as { since: string }).since });
  assert.equal(fwd.peers().find((p) => p.id === id)?.name, 'svc');
  assert.equal(fwd.peers().find((p) => p.id === id)?.owned, 2, 'it owns lock/a and its presence key');
});

test('KVPRESENT never lands inside a snapshot: it follows the KTHXBAI of one in flight or waiting', async (t) => {
  // The DEALER never subscribes, so its request waits `joinWait` for a join subscription.
  const fwd = await forwarder(t, { joinWait: 200 });
  await fwd.load(Array.from({ length: 2000 }, (_, i) => [`k/${i}`, i] as const));
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  const id = randomBytes(8).toString('hex');
  await dealer.send([Buffer.from('ICANHAZ?'), EMPTY]);
  await dealer.send([Buffer.from('KVBEAT'), ZERO_SEQ, EMPTY, Buffer.from(`owner=${id}\n`), EMPTY]);
  const seen: string[] = [];
  while (!seen.includes('KVPRESENT')) seen.push((await inbox.next('the snapshot and KVPRESENT'))[0]!.toString());
  assert.equal(seen.at(-2), 'KTHXBAI', `KVPRESENT came after the snapshot: ${seen.slice(-3).join(', ')}`);
  assert.ok(seen.filter((c) => c === 'KVBATCH').length >= 1);
});
