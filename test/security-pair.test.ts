/**
 * The write policy in a primary/backup pair (issues 9 and 10): a captured signed write, and a
 * refused one, replayed at the backup after it took over get their first outcomes; nothing is
 * applied twice.
 *
 * Topology: a pair of in-process Forwarders (both with the policy, short pair timings), a raw
 * DEALER ("ckv1…") per member sending captured KVSETs, and a peer whose snapshot request makes
 * the backup take over once the primary is closed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { generateIdentity, Policy, type Forwarder, type Identity } from '../src/index.ts';
import { encodeProperties } from '../src/protocol/properties.ts';
import { encodeValue } from '../src/protocol/values.ts';
import { signWrite } from '../src/security/signature.ts';
import { peer, waitFor, within } from './helpers.ts';
import { startPair } from './pair-helpers.ts';
import { rawDealer, ZERO_SEQ } from './raw-sockets.ts';

const alice = generateIdentity();
const bob = generateIdentity();
const POLICY = Policy.parse(`writers:\n  - name: alice\n    key: ${alice.id}\n    prefixes: [config/]\n  - name: bob\n    key: ${bob.id}\n    prefixes: [b/]\n`);

function signedFrames(identity: Identity, key: string, value: unknown): Buffer[] {
  const keyBytes = Buffer.from(key);
  const uuid = randomBytes(16);
  const body = encodeValue(value);
  const props: Array<[string, string]> = [['enc', 'msgpack']];
  signWrite(identity, keyBytes, uuid, body, props);
  return [keyBytes, ZERO_SEQ, uuid, encodeProperties(props), body];
}

function rawWriter(t: TestContext, fwd: Forwarder) {
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  return async (frames: Buffer[]): Promise<{ status: string; seq: number }> => {
    await dealer.send(frames);
    for (;;) {
      const ack = await inbox.next('a KVACK', 10_000);
      if (ack[0]!.toString() !== 'KVACK' || !ack[2]!.equals(frames[2]!)) continue;
      return { status: /status=(\w+)/.exec(ack[3]!.toString())![1]!, seq: Number(ack[1]!.readBigInt64BE()) };
    }
  };
}

test('after a failover the new active answers replayed signed writes with their first outcomes', async (t) => {
  const { primary, backup } = await startPair(t, { both: { policy: POLICY } });
  const write = rawWriter(t, primary);
  const ok = signedFrames(alice, 'config/pair', 'v1');
  const refused = signedFrames(bob, 'config/pair', 'evil');
  const first = await write(ok);
  assert.equal(first.status, 'ok');
  assert.equal((await write(refused)).status, 'unauthorized');
  await waitFor('the backup to hold the write', () => backup.sequence === first.seq);

  await primary.close();
  // A snapshot request (after the partner's silence) makes the backup take over.
  const p = peer(t, backup.endpoint, { policy: POLICY, presence: false });
  await within('the backup to take over and serve', p.ready(), 15_000);
  assert.equal(backup.role, 'active');
  assert.equal(p.get('config/pair'), 'v1');

  const writeB = rawWriter(t, backup);
  assert.deepEqual(await writeB(ok), first);
  assert.equal((await writeB(refused)).status, 'unauthorized');
  assert.equal(backup.sequence, first.seq, 'a replay was applied at the new active');
  assert.equal((await writeB(signedFrames(alice, 'config/pair', 'v2'))).status, 'ok');
  await waitFor('the verifying peer to see v2', () => p.get('config/pair') === 'v2');
});
