/**
 * The write policy at the forwarder (issue 10): who may write which prefixes, refusals that
 * name the key and the identity, counted and never published; reload without restart; replay
 * refused at once, after the de-duplication window and after a restart.
 *
 * Topology: a Forwarder with a policy (ROUTER P, XPUB P+1, SUB P+2); clonekv peers with
 * identities; raw DEALERs (ids "ckv1…") sending captured or forged KVSETs; a raw PUB on P+2 as
 * a plain CHP writer.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { Forwarder, generateIdentity, Policy, type Identity, type WatchEntry } from '../src/index.ts';
import { encodeProperties } from '../src/protocol/properties.ts';
import { encodeValue } from '../src/protocol/values.ts';
import { signWrite } from '../src/security/signature.ts';
import { dataDir, forwarder, peer, readyPeer, waitFor } from './helpers.ts';
import { rawDealer, ZERO_SEQ } from './raw-sockets.ts';

const alice = generateIdentity();
const bob = generateIdentity();
const carol = generateIdentity(); // named in no policy

function policyText(prefixes: { alice: string[]; bob: string[] }): string {
  return `writers:\n  - name: alice\n    key: ${alice.id}\n    prefixes: ${JSON.stringify(prefixes.alice)}\n  - name: bob\n    key: ${bob.id}\n    prefixes: ${JSON.stringify(prefixes.bob)}\n`;
}
const POLICY = Policy.parse(policyText({ alice: ['config/'], bob: ['b/'] }), 'test policy');

/** A signed KVSET's five frames, as a peer with `identity` sends it (captured for replays). */
function signedFrames(identity: Identity, key: string, value: unknown, ts = Date.now(), uuid = randomBytes(16)): Buffer[] {
  const keyBytes = Buffer.from(key);
  const body = encodeValue(value);
  const props: Array<[string, string]> = [['enc', 'msgpack']];
  signWrite(identity, keyBytes, uuid, body, props, ts);
  return [keyBytes, ZERO_SEQ, uuid, encodeProperties(props), body];
}

/** A raw clonekv writer: sends frames, resolves with the KVACK's status, sequence and detail. */
function rawWriter(t: TestContext, fwd: Forwarder) {
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  return async (frames: Buffer[]): Promise<{ status: string; seq: number; detail: string }> => {
    await dealer.send(frames);
    for (;;) {
      const ack = await inbox.next('a KVACK');
      if (ack[0]!.toString() !== 'KVACK' || !ack[2]!.equals(frames[2]!)) continue;
      const text = ack[3]!.toString();
      return { status: /status=(\w+)/.exec(text)![1]!, seq: Number(ack[1]!.readBigInt64BE()), detail: /detail=(.*)/.exec(text)?.[1] ?? '' };
    }
  };
}

function code(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

test('a policy lets each identity write its prefixes; any other write is refused naming key and identity, counted, never published', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  const seen: WatchEntry[] = [];
  const watcher = await readyPeer(t, fwd.endpoint);
  watcher.on('update', (e) => seen.push(e));
  const a = await readyPeer(t, fwd.endpoint, { identity: alice });
  const c = await readyPeer(t, fwd.endpoint, { identity: carol });
  const unsigned = await readyPeer(t, fwd.endpoint);

  assert.ok((await a.set('config/a', 1)) > 0);
  await assert.rejects(a.set('b/x', 1), (e) => code(e) === 'CLONEKV_UNAUTHORIZED' && /"b\/x"/.test((e as Error).message) && (e as Error).message.includes(`alice (${alice.id})`));
  await assert.rejects(c.set('config/a', 2), (e) => code(e) === 'CLONEKV_UNAUTHORIZED' && /"config\/a"/.test((e as Error).message) && (e as Error).message.includes(carol.id));
  await assert.rejects(unsigned.set('config/a', 3), (e) => code(e) === 'CLONEKV_UNAUTHORIZED' && /unsigned write to "config\/a"/.test((e as Error).message));
  await assert.rejects(unsigned.delete('config/a'), (e) => code(e) === 'CLONEKV_UNAUTHORIZED');

  // A forged signature (alice's, over another value) and a signer swapped in after signing.
  const write = rawWriter(t, fwd);
  const forged = signedFrames(alice, 'config/a', 'good');
  forged[4] = encodeValue('evil');
  assert.equal((await write(forged)).status, 'unauthorized');
  const swapped = signedFrames(carol, 'config/a', 'evil');
  swapped[3] = Buffer.from(swapped[3]!.toString().replace(carol.signer, alice.signer));
  const refusal = await write(swapped);
  assert.equal(refusal.status, 'unauthorized');
  assert.match(refusal.detail, /bad signature/);

  // A plain CHP writer (no acknowledgement): counted, dropped. Sent until the SUB has it.
  const pub = new zmq.Publisher({ linger: 0 });
  t.after(() => pub.close());
  pub.connect(fwd.endpoints.collector);
  const before = fwd.stats().unauthorized;
  const deadline = Date.now() + 10_000;
  while (fwd.stats().unauthorized === before) {
    assert.ok(Date.now() < deadline, 'the plain write was never refused');
    await pub.send([Buffer.from('config/a'), ZERO_SEQ, randomBytes(16), Buffer.alloc(0), Buffer.from('plain')]);
    await waitFor('the plain write to arrive', () => fwd.stats().unauthorized > before, 100).catch(() => {});
  }

  await a.set('config/end', true);
  await waitFor('the watcher to see config/end', () => watcher.has('config/end'));
  assert.deepEqual(
    seen.map((e) => [e.key, e.value]),
    [
      ['config/a', 1],
      ['config/end', true],
    ],
  );
  const stats = fwd.stats();
  assert.ok(stats.unauthorized >= 7, `unauthorized ${stats.unauthorized}`);
  assert.ok(stats.rejected >= stats.unauthorized);
});

test('reloadPolicy swaps the policy without a restart; a bad file keeps the old one and says why', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clonekv-policy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.yaml');
  writeFileSync(file, policyText({ alice: ['config/'], bob: [] }));
  const fwd = await forwarder(t, { policy: file });
  const a = await readyPeer(t, fwd.endpoint, { identity: alice });
  await assert.rejects(a.set('flags/x', 1), (e) => code(e) === 'CLONEKV_UNAUTHORIZED');

  writeFileSync(file, policyText({ alice: ['config/', 'flags/'], bob: [] }));
  assert.equal(fwd.reloadPolicy().writer(alice.signer)!.prefixes.length, 2);
  assert.ok((await a.set('flags/x', 1)) > 0);

  writeFileSync(file, 'writers:\n  - key: nonsense\n');
  assert.throws(() => fwd.reloadPolicy(), (e) => code(e) === 'CLONEKV_INVALID_OPTION' && (e as Error).message.includes(file) && /writers\[0\]/.test((e as Error).message));
  // The old policy stays in force.
  assert.ok((await a.set('flags/y', 2)) > 0);
  await assert.rejects(a.set('b/x', 1), (e) => code(e) === 'CLONEKV_UNAUTHORIZED');

  // A Policy object works too; a forwarder without a policy file has nothing to reload.
  fwd.reloadPolicy(Policy.parse('writers: []\n'));
  await assert.rejects(a.set('config/z', 1), (e) => code(e) === 'CLONEKV_UNAUTHORIZED');
  const open = await forwarder(t);
  assert.throws(() => open.reloadPolicy(), (e) => code(e) === 'CLONEKV_INVALID_OPTION');
});

test('a captured signed write sent again at once gets its first outcome and is never applied twice; its signature binds key and uuid', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  const write = rawWriter(t, fwd);
  const captured = signedFrames(alice, 'config/once', 'v1');
  const first = await write(captured);
  assert.equal(first.status, 'ok');
  for (let i = 0; i < 3; i++) assert.deepEqual(await write(captured), first);
  assert.equal(fwd.sequence, first.seq);
  assert.equal(fwd.stats().duplicates, 3);

  // The same signature under another uuid, or another key: not alice's write any more.
  assert.equal((await write([captured[0]!, ZERO_SEQ, randomBytes(16), captured[3]!, captured[4]!])).status, 'unauthorized');
  assert.equal((await write([Buffer.from('config/other'), ZERO_SEQ, randomBytes(16), captured[3]!, captured[4]!])).status, 'unauthorized');
  // A refused write replayed: refused again.
  const refused = signedFrames(alice, 'b/no', 1);
  assert.equal((await write(refused)).status, 'unauthorized');
  assert.equal((await write(refused)).status, 'unauthorized');
  // A signed write without a uuid (which is what de-duplicates a replay) is refused.
  const noUuid = signedFrames(alice, 'config/nouuid', 1, Date.now(), Buffer.alloc(0));
  assert.match((await write(noUuid)).detail, /no uuid/);
  assert.equal(fwd.sequence, first.seq);
});

test('after the de-duplication window a replay is refused by its signed timestamp; so is a write signed too far in the future', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY, dedupTtl: 1000 });
  assert.deepEqual(fwd.signatureWindow, { past: 750, future: 250 });
  const write = rawWriter(t, fwd);
  const signedAt = Date.now();
  const captured = signedFrames(alice, 'config/late', 'v1', signedAt);
  const first = await write(captured);
  assert.equal(first.status, 'ok');
  // Past the de-duplication window (the forwarder has forgotten the uuid).
  await waitFor('the de-duplication window to pass', () => Date.now() > signedAt + 1100, 5000);
  const replay = await write(captured);
  assert.equal(replay.status, 'unauthorized');
  assert.match(replay.detail, /refused as a replay: signed \d+ ms ago, more than 750 ms/);
  assert.equal(fwd.sequence, first.seq);

  const future = await write(signedFrames(alice, 'config/future', 'v', Date.now() + 5000));
  assert.equal(future.status, 'unauthorized');
  assert.match(future.detail, /in the future/);
  assert.equal((await write(signedFrames(alice, 'config/old', 'v', Date.now() - 5000))).status, 'unauthorized');
  assert.equal((await write(signedFrames(alice, 'config/now', 'v'))).status, 'ok');
});

test('after a restart a durable forwarder answers a replay from the outcomes it kept on disk', async (t) => {
  const dir = dataDir(t);
  const fwd1 = await Forwarder.start({ port: 0, dataDir: dir, policy: POLICY });
  let closed = false;
  t.after(async () => {
    if (!closed) await fwd1.close();
  });
  const write1 = rawWriter(t, fwd1);
  const captured = signedFrames(alice, 'config/durable', 'v1');
  const refusedCapture = signedFrames(bob, 'config/durable', 'evil');
  const first = await write1(captured);
  assert.equal(first.status, 'ok');
  assert.equal((await write1(refusedCapture)).status, 'unauthorized');
  await fwd1.close();
  closed = true;

  const fwd2 = await forwarder(t, { dataDir: dir, policy: POLICY });
  assert.equal(fwd2.sequence, first.seq);
  const write2 = rawWriter(t, fwd2);
  assert.deepEqual(await write2(captured), first);
  assert.equal((await write2(refusedCapture)).status, 'unauthorized');
  assert.equal(fwd2.sequence, first.seq, 'the replay was applied again after the restart');
  const p = await readyPeer(t, fwd2.endpoint);
  assert.equal(p.get('config/durable'), 'v1');
  void peer;
});
