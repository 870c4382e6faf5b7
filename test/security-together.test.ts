/**
 * The security features together: a CURVE forwarder with an allow-list and a write policy, and
 * peers that sign, verify and seal. A writer allowed on the wire and by the policy writes a
 * sealed value; a verifying peer with the secret reads it in clear, one without the secret sees
 * a SealedValue; a writer the policy does not know is refused; a client key not on the
 * allow-list cannot even connect.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import * as zmq from 'zeromq';
import { ErrorCode, generateIdentity, Policy, SealedValue, type Forwarder, type PeerOptions } from '../src/index.ts';
import { forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';

test('CURVE + allow-list + policy + signatures + sealed values, all at once', async (t) => {
  const alice = generateIdentity();
  const mallory = generateIdentity();
  const policy = Policy.parse(`writers:\n  - name: alice\n    key: ${alice.id}\n    prefixes: [secrets/, config/]\n`, 'test policy');
  const keys = { alice: zmq.curveKeyPair(), reader: zmq.curveKeyPair(), blind: zmq.curveKeyPair(), mallory: zmq.curveKeyPair(), stranger: zmq.curveKeyPair() };
  const fwd: Forwarder = await forwarder(t, {
    curve: zmq.curveKeyPair(),
    curveAllow: [keys.alice.publicKey, keys.reader.publicKey, keys.blind.publicKey, keys.mallory.publicKey],
    policy,
  });
  const serverKey = fwd.stats().curve!.publicKey;
  const curve = (k: { publicKey: string; secretKey: string }): NonNullable<PeerOptions['curve']> => ({ serverKey, ...k });
  const secret = randomBytes(32);
  const sealed = [{ prefix: 'secrets/', secret }];

  const writer = await readyPeer(t, fwd.endpoint, { curve: curve(keys.alice), identity: alice, sealed });
  const reader = await readyPeer(t, fwd.endpoint, { curve: curve(keys.reader), policy, sealed });
  const blind = await readyPeer(t, fwd.endpoint, { curve: curve(keys.blind), policy });

  assert.ok((await writer.set('secrets/db', { password: 'hunter2' })) > 0);
  assert.ok((await writer.set('config/mode', 'fast')) > 0);
  await waitFor('the reader opens the sealed value', () => reader.get('config/mode') === 'fast' && reader.has('secrets/db'));
  assert.deepEqual(reader.get('secrets/db'), { password: 'hunter2' });
  await waitFor('the blind peer has both keys', () => blind.get('config/mode') === 'fast' && blind.has('secrets/db'));
  assert.ok(blind.get('secrets/db') instanceof SealedValue, 'without the secret: a SealedValue');
  assert.equal(reader.stats().unauthorized, 0);

  // Allowed on the wire, unknown to the policy: refused, never published.
  const intruder = await readyPeer(t, fwd.endpoint, { curve: curve(keys.mallory), identity: mallory });
  await assert.rejects(intruder.set('config/mode', 'slow'), (err: { code?: string }) => err.code === ErrorCode.Unauthorized);
  assert.equal(fwd.stats().unauthorized, 1);

  // Not on the allow-list: no snapshot, no write.
  const stranger = peer(t, fwd.endpoint, { curve: curve(keys.stranger), identity: alice, writeTimeout: 500 });
  await assert.rejects(stranger.set('config/mode', 'stranger'), (err: { code?: string }) => err.code === ErrorCode.Timeout);
  assert.equal(stranger.status, 'syncing');
  await within('a last write through', writer.set('config/last', 1));
  await waitFor('the reader caught up', () => reader.get('config/last') === 1);
  assert.equal(reader.get('config/mode'), 'fast', 'no refused write ever reached a peer');
  assert.equal(blind.get('config/mode'), 'fast');
});
