/**
 * CURVE on the forwarder's sockets and the ZAP allow-list: allowed clients sync and write;
 * a client with an unknown key, or without CURVE, can neither read nor write; the wire carries
 * no plaintext (a tapping TCP proxy between peer and forwarder sees only ciphertext).
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { ErrorCode, type Forwarder, type Peer, type PeerOptions } from '../src/index.ts';
import { isZ85Key, z85Decode, z85Encode } from '../src/security/curve.ts';
import { contents, forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';
import { tcpProxy } from './tcp-proxy.ts';

const MARKER = 'ZEBRA-PLAINTEXT-MARKER-4711';

/** A peer option `curve` for the forwarder, with a keypair (a fresh one if not given). */
function clientCurve(fwd: Forwarder, keys = zmq.curveKeyPair()): NonNullable<PeerOptions['curve']> {
  return { serverKey: fwd.stats().curve!.publicKey, ...keys };
}

/** Expects `p` to make no progress: its write times out and it never gets a snapshot. */
async function assertLockedOut(p: Peer, key: string): Promise<void> {
  let ready = false;
  p.ready().then(
    () => (ready = true),
    () => {},
  );
  await assert.rejects(p.set(key, 'intruder'), (err: { code?: string }) => err.code === ErrorCode.Timeout);
  assert.equal(ready, false, 'a refused client received a snapshot');
  assert.equal(p.size, 0, 'a refused client holds entries');
}

test('z85 round trip matches zeromq keys', () => {
  const { publicKey } = zmq.curveKeyPair();
  assert.ok(isZ85Key(publicKey));
  assert.equal(z85Encode(z85Decode(publicKey)!), publicKey);
  assert.equal(isZ85Key('x'.repeat(39)), false);
  assert.equal(isZ85Key('~'.repeat(40)), false);
});

test('allowed client keys sync and write; stats count them', async (t) => {
  const a = zmq.curveKeyPair();
  const b = zmq.curveKeyPair();
  const fwd = await forwarder(t, { curve: zmq.curveKeyPair(), curveAllow: [a.publicKey, b.publicKey] });
  const pa = await readyPeer(t, fwd.endpoint, { curve: clientCurve(fwd, a) });
  await pa.set('cfg/x', 1);
  const pb = await readyPeer(t, fwd.endpoint, { curve: clientCurve(fwd, b) });
  assert.equal(pb.get('cfg/x'), 1);
  await pb.set('cfg/y', 2);
  await waitFor('a sees b', () => pa.get('cfg/y') === 2);
  const s = fwd.stats().curve!;
  assert.equal(s.allowList, 2);
  assert.ok(s.accepted >= 4, `accepted ${s.accepted}`);
  assert.equal(s.refused, 0);
});

test('a client with an unknown key can neither read nor write', async (t) => {
  const a = zmq.curveKeyPair();
  const fwd = await forwarder(t, { curve: zmq.curveKeyPair(), curveAllow: [a.publicKey] });
  const pa = await readyPeer(t, fwd.endpoint, { curve: clientCurve(fwd, a) });
  await pa.set('cfg/x', 1);
  const stranger = peer(t, fwd.endpoint, { curve: clientCurve(fwd), writeTimeout: 1500 });
  await assertLockedOut(stranger, 'cfg/evil');
  await pa.set('cfg/after', 2); // sequenced after the stranger's attempts
  await waitFor('a sees its write', () => pa.get('cfg/after') === 2);
  assert.deepEqual(contents(pa, 'cfg/'), { 'cfg/x': 1, 'cfg/after': 2 });
  assert.ok(fwd.stats().curve!.refused > 0, 'refusals are counted');
});

test('a client without CURVE cannot talk to a CURVE forwarder', async (t) => {
  const fwd = await forwarder(t, { curve: zmq.curveKeyPair() });
  const plain = peer(t, fwd.endpoint, { writeTimeout: 1500 });
  await assertLockedOut(plain, 'cfg/plain');
  assert.equal(fwd.stats().keys, 0);
  assert.equal(fwd.stats().curve!.allowList, null);
  // Without an allow-list any CURVE client that knows the server key gets in.
  const ok = await readyPeer(t, fwd.endpoint, { curve: clientCurve(fwd) });
  await ok.set('cfg/ok', true);
});

/** Runs a writer and a reader through tapping proxies and returns every byte they exchanged. */
async function wireBytes(t: TestContext, fwd: Forwarder, curve: boolean): Promise<Buffer> {
  const e = fwd.endpoints;
  const [snapshot, publisher, collector] = await Promise.all([e.snapshot, e.publisher, e.collector].map((x) => tcpProxy(t, x, { tap: true })));
  const server = { snapshot: snapshot!.endpoint, publisher: publisher!.endpoint, collector: collector!.endpoint };
  const options = (): PeerOptions => (curve ? { curve: clientCurve(fwd) } : {});
  const writer = await readyPeer(t, server, options());
  const reader = await readyPeer(t, server, options());
  await writer.set('wire/secret', MARKER);
  await waitFor('reader sees the value', () => reader.get('wire/secret') === MARKER);
  const late = peer(t, server, options()); // gets the value in its snapshot
  await within('late peer ready', late.ready());
  assert.equal(late.get('wire/secret'), MARKER);
  return Buffer.concat([snapshot!.tapped(), publisher!.tapped(), collector!.tapped()]);
}

test('the wire carries no plaintext with CURVE (and does without: the control)', async (t) => {
  const plainFwd = await forwarder(t);
  const plain = await wireBytes(t, plainFwd, false);
  assert.ok(plain.includes(MARKER), 'the tap sees plaintext without CURVE');
  const curveFwd = await forwarder(t, { curve: zmq.curveKeyPair() });
  const secure = await wireBytes(t, curveFwd, true);
  assert.ok(secure.length > 200, `the tap saw ${secure.length} bytes`);
  assert.equal(secure.includes(MARKER), false, 'plaintext value on the wire');
  assert.equal(secure.includes('wire/secret'), false, 'plaintext key on the wire');
});

test('bad CURVE options are named', async () => {
  const { Forwarder, Peer } = await import('../src/index.ts');
  await assert.rejects(Forwarder.start({ port: 0, curve: { publicKey: 'short', secretKey: 'x' } }), /curve\.publicKey/);
  await assert.rejects(Forwarder.start({ port: 0, curveAllow: [zmq.curveKeyPair().publicKey] }), /curveAllow.*applies only with curve/);
  await assert.rejects(Forwarder.start({ port: 0, curve: zmq.curveKeyPair(), curveAllow: ['nope'] }), /curveAllow\[0\]/);
  assert.throws(() => new Peer({ curve: { serverKey: 'bad' } }), /curve\.serverKey/);
  assert.throws(() => new Peer({ curve: { serverKey: zmq.curveKeyPair().publicKey, publicKey: zmq.curveKeyPair().publicKey } }), /curve\.secretKey/);
});

test('allow-list files: keys (even ones holding #), comments, and a bad line named', async () => {
  const { parseAllowList } = await import('../src/security/curve.ts');
  let hashKey = '';
  while (!hashKey.includes('#')) hashKey = zmq.curveKeyPair().publicKey; // '#' is a z85 digit
  const plain = zmq.curveKeyPair().publicKey;
  assert.deepEqual(parseAllowList(`# admins\n\n${hashKey}\n  ${plain}  # ops laptop\n`, 'f'), [hashKey, plain]);
  assert.throws(() => parseAllowList(`${plain}\nnot-a-key\n`, 'f'), /f line 2/);
});

test('a pair sharing one server key: a CURVE peer with an allowed key fails over and writes on', async (t) => {
  const { startPair } = await import('./pair-helpers.ts');
  const client = zmq.curveKeyPair();
  const server = zmq.curveKeyPair();
  const { primary, backup } = await startPair(t, { both: { curve: server, curveAllow: [client.publicKey] } });
  const p = await readyPeer(t, [primary.endpoint, backup.endpoint], { curve: { serverKey: server.publicKey, ...client }, silenceTimeout: 500, writeTimeout: 8000 });
  await p.set('cfg/before', 1);
  await primary.close();
  await within('a write after the failover', p.set('cfg/after', 2), 12_000);
  assert.equal(p.server, backup.endpoint);
  assert.equal(p.get('cfg/before'), 1);
  assert.ok(backup.stats().curve!.accepted > 0);
});

test("a CURVE pair's state channel is encrypted and admits only the pair's key (the control: plaintext without)", async (t) => {
  const { member, pairPorts, replicating } = await import('./pair-helpers.ts');
  const run = async (curve: boolean): Promise<{ bytes: Buffer; backup: Forwarder }> => {
    const ports = await pairPorts();
    // The primary reaches the backup's state port through a tapping proxy: replication goes there.
    const tap = await tcpProxy(t, ports.backup, { tap: true });
    const server = zmq.curveKeyPair();
    const options = curve ? { curve: server } : {};
    const primary = await member(t, 'primary', ports, { ...options, partner: tap.endpoint });
    const backup = await member(t, 'backup', ports, options);
    await replicating(primary, backup);
    const p = await readyPeer(t, primary.endpoint, curve ? { curve: { serverKey: server.publicKey } } : {});
    await p.set('wire/secret', MARKER);
    await waitFor('replicated', () => backup.stats().sequence >= primary.stats().sequence);
    return { bytes: tap.tapped(), backup };
  };
  const plain = await run(false);
  assert.ok(plain.bytes.includes(MARKER), 'the tap sees the replication in clear without CURVE');
  const secure = await run(true);
  assert.ok(secure.bytes.length > 100);
  assert.equal(secure.bytes.includes(MARKER), false, 'plaintext on the state channel');
  assert.equal(secure.backup.stats().curve!.stateRefused, 0);

  // A stranger who knows the (public) server key but not the pair's secret key is refused there.
  const own = zmq.curveKeyPair();
  const stranger = new zmq.Dealer({ linger: 0, curveServerKey: secure.backup.stats().curve!.publicKey, curvePublicKey: own.publicKey, curveSecretKey: own.secretKey });
  t.after(() => stranger.close());
  stranger.connect(secure.backup.stateEndpoint!);
  await waitFor('refused on the state port', () => secure.backup.stats().curve!.stateRefused > 0);
});
