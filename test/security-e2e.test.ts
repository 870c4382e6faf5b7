/**
 * End-to-end verification at the peer (issue 10): a peer given a policy applies only updates
 * signed by an identity the policy allows for that key, whatever the forwarder publishes: live
 * updates, snapshot entries and delta entries alike.
 *
 * Topology: (1) a real Forwarder run WITHOUT a policy (so it publishes anything: a stand-in for
 * a compromised one), writers with and without identities, and verifying peers; (2) a scripted
 * FakeForwarder (raw ROUTER + XPUB) that serves a snapshot, live updates and a delta holding
 * forged values with valid-looking signatures.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { generateIdentity, Policy, type ClonekvError, type Identity } from '../src/index.ts';
import { entrySize, packBatch, type WireEntry } from '../src/protocol/batch.ts';
import { encodeProperties } from '../src/protocol/properties.ts';
import { encodeValue } from '../src/protocol/values.ts';
import { signWrite } from '../src/security/signature.ts';
import { FakeForwarder, props, seqFrame } from './fake-forwarder.ts';
import { forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';

const alice = generateIdentity();
const carol = generateIdentity(); // in no policy
const POLICY = Policy.parse(`writers:\n  - name: alice\n    key: ${alice.id}\n    prefixes: [config/]\n`, 'test policy');

/** An update as a writer with `identity` signed it: key, uuid, properties, body. */
function signed(identity: Identity, key: string, value: unknown): { key: Buffer; uuid: Buffer; properties: Buffer; body: Buffer } {
  const keyBytes = Buffer.from(key);
  const uuid = randomBytes(16);
  const body = encodeValue(value);
  const p: Array<[string, string]> = [['enc', 'msgpack']];
  signWrite(identity, keyBytes, uuid, body, p);
  return { key: keyBytes, uuid, properties: encodeProperties(p), body };
}

/** Alice's signature, with the value swapped after signing (what a forging forwarder would send). */
function forged(key: string, value: unknown): ReturnType<typeof signed> {
  return { ...signed(alice, key, 'the signed value'), body: encodeValue(value) };
}

function batch(entries: Array<ReturnType<typeof signed> & { sequence: number }>): Buffer {
  const wire: WireEntry[] = entries.map((e) => ({ key: e.key, sequence: e.sequence, uuid: e.uuid, properties: e.properties, body: e.body }));
  return packBatch(wire, wire.reduce((n, e) => n + entrySize(e), 0));
}

test('through a forwarder that publishes anything, a verifying peer applies only what the policy allows, live and in snapshots', async (t) => {
  const fwd = await forwarder(t); // no policy: publishes every write
  const errors: ClonekvError[] = [];
  const verifier = await readyPeer(t, fwd.endpoint, { policy: POLICY });
  verifier.on('error', (e) => errors.push(e));
  const a = await readyPeer(t, fwd.endpoint, { identity: alice });
  const c = await readyPeer(t, fwd.endpoint, { identity: carol });
  const unsigned = await readyPeer(t, fwd.endpoint);

  await a.set('config/a', 1);
  await c.set('config/a', 'evil-by-carol');
  await unsigned.set('config/a', 'evil-unsigned');
  await a.set('flags/x', 'alice outside her prefixes');
  await a.set('config/ttl', 'short-lived', { ttl: 0.2 });
  await unsigned.delete('config/ttl');
  await a.set('config/expiring', 'short-lived', { ttl: 0.2 });
  await a.set('config/b', 2);
  await waitFor('the verifier to reach the last write', () => verifier.has('config/b'));
  assert.equal(verifier.get('config/a'), 1);
  assert.equal(verifier.has('flags/x'), false);
  assert.equal(verifier.get('config/ttl'), 'short-lived', 'an unsigned delete was applied');
  assert.equal(verifier.stats().unauthorized, 4);
  assert.equal(verifier.stats().resyncs, 0);
  assert.equal(errors.length, 4);
  assert.ok(errors.every((e) => e.code === 'CLONEKV_UNAUTHORIZED'));
  assert.ok(errors.some((e) => e.message.includes(carol.id) && e.message.includes('"config/a"')));
  assert.ok(errors.some((e) => /unsigned write to "config\/a"/.test(e.message)));
  // The forwarder's own delete at expiry carries no signature, and is applied.
  await waitFor('config/expiring to expire at the verifier', () => !verifier.has('config/expiring'), 5000);
  assert.equal(verifier.stats().unauthorized, 4);
  // A non-verifying peer sees what the forwarder published.
  assert.equal(unsigned.get('config/a'), 'evil-unsigned');

  // A peer joining now gets a snapshot whose config/a is the unsigned value: not applied.
  const late = peer(t, fwd.endpoint, { policy: POLICY });
  await within('the late peer to sync', late.ready());
  assert.equal(late.has('config/a'), false);
  assert.equal(late.has('flags/x'), false);
  assert.equal(late.get('config/b'), 2);
  assert.equal(late.stats().unauthorized, 2);
});

test('a forging forwarder: forged snapshot entries, live updates and delta entries are never applied', async (t) => {
  const fake = await FakeForwarder.start(t);
  const errors: ClonekvError[] = [];
  const p = peer(t, 'unused', { server: fake.endpoints, policy: POLICY, presence: false, silenceTimeout: 60_000 });
  p.on('error', (e) => errors.push(e));

  // Snapshot: one good entry, one with a forged value, one unsigned, one signed by carol.
  const [id] = await fake.next('ICANHAZ?');
  const snapshot = [
    { ...signed(alice, 'config/good', 'good'), sequence: 1 },
    { ...forged('config/forged', 'evil'), sequence: 2 },
    { ...signed(alice, 'config/unsigned', 'x'), properties: encodeProperties([['enc', 'msgpack']]), sequence: 3 },
    { ...signed(carol, 'config/carol', 'evil'), sequence: 4 },
  ];
  await fake.reply(id!, 'KVBATCH', 0, Buffer.alloc(0), batch(snapshot));
  await fake.snapshotEnd(id!, 4, { count: 4, resume: 1 });
  await within('the peer to sync', p.ready());
  assert.deepEqual([...p.keys()], ['config/good']);
  assert.equal(p.stats().unauthorized, 3);

  // Live: a forged overwrite of config/good, then a good update.
  await waitFor('the subscription', () => fake.subscriptions.all.length > 0);
  const publish = (e: ReturnType<typeof signed>, seq: number): Promise<void> => fake.xpub.send([e.key, seqFrame(seq), e.uuid, e.properties, e.body]);
  await publish(forged('config/good', 'evil-live'), 5);
  await publish(signed(alice, 'config/live', 'ok'), 6);
  await waitFor('the good live update', () => p.has('config/live'));
  assert.equal(p.get('config/good'), 'good');
  assert.equal(p.stats().unauthorized, 4);
  assert.equal(p.stats().resyncs, 0, 'a refused update must not look like a gap');

  // A gap makes the peer ask to resume; the delta holds a forged entry and a good one.
  await publish(signed(alice, 'config/after-gap', 'x'), 8);
  const request = await fake.next('ICANHAZ?');
  assert.match(request[3]?.toString() ?? '', /since=6/);
  const delta = [
    { ...signed(carol, 'config/good', 'evil-delta'), sequence: 7 },
    { ...signed(alice, 'config/delta', 'ok'), sequence: 8 },
  ];
  await fake.reply(request[0]!, 'KVBATCH', 0, Buffer.alloc(0), batch(delta));
  await fake.reply(request[0]!, 'KTHXBAI', 8, props({ clonekv: 1, epoch: fake.epoch, count: 2, joined: 1, resume: 1, delta: 1 }));
  await waitFor('the delta', () => p.has('config/delta'));
  assert.equal(p.stats().deltaSyncs, 1);
  assert.equal(p.get('config/good'), 'good');
  assert.equal(p.stats().unauthorized, 5);
  assert.equal(errors.length, 5);
  assert.ok(errors.every((e) => e.code === 'CLONEKV_UNAUTHORIZED'));
});

test('a verifying peer reloads its policy: updates from then on are checked against the new one', async (t) => {
  const fwd = await forwarder(t);
  const verifier = await readyPeer(t, fwd.endpoint, { policy: POLICY });
  verifier.on('error', () => {});
  const c = await readyPeer(t, fwd.endpoint, { identity: carol });
  const a = await readyPeer(t, fwd.endpoint, { identity: alice });
  await c.set('config/c', 1);
  await a.set('config/mark1', true);
  await waitFor('the first mark', () => verifier.has('config/mark1'));
  assert.equal(verifier.has('config/c'), false);
  verifier.reloadPolicy(Policy.parse(`writers:\n  - key: ${alice.id}\n    prefixes: [config/]\n  - key: ${carol.id}\n    prefixes: [config/c]\n`));
  await c.set('config/c', 2);
  await a.set('config/mark2', true);
  await waitFor('the second mark', () => verifier.has('config/mark2'));
  assert.equal(verifier.get('config/c'), 2);
  assert.equal(verifier.stats().unauthorized, 1);
  assert.throws(() => c.reloadPolicy(POLICY), (e) => (e as ClonekvError).code === 'CLONEKV_INVALID_OPTION');
  assert.throws(() => verifier.reloadPolicy(), (e) => (e as ClonekvError).code === 'CLONEKV_INVALID_OPTION' && /no policy file/.test((e as Error).message));
});
