/**
 * Sealed subtrees: a peer with the secret writes and reads plaintext (get, watch, snapshot,
 * history); a peer without it sees a SealedValue, never garbage; the forwarder and a raw
 * subscriber see only ciphertext; a tampered body or a wrong secret gives the marker, counted.
 *
 * Topology: one forwarder, in-process peers, a raw SUB on the publisher, a raw PUB on the
 * collector (plain CHP writes) to inject a tampered sealed body.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import * as zmq from 'zeromq';
import { SealedValue } from '../src/index.ts';
import { encodeProperties } from '../src/protocol/properties.ts';
import { encodeValue } from '../src/protocol/values.ts';
import { forwarder, readyPeer, waitFor, within } from './helpers.ts';
import { EMPTY, propMap, ZERO_SEQ } from './raw-sockets.ts';

const MARKER = 'HUSH-SEALED-PLAINTEXT-9137';
const SECRET = randomBytes(32);

test('sealed values: plaintext with the secret, a marker without, ciphertext on the forwarder', async (t) => {
  const fwd = await forwarder(t);
  // A raw subscriber sees what the forwarder publishes.
  const sub = new zmq.Subscriber({ linger: 0 });
  t.after(() => sub.close());
  sub.connect(fwd.endpoints.publisher);
  sub.subscribe('vault/');
  const published: Buffer[][] = [];
  void (async () => {
    try {
      for (;;) published.push(await sub.receive());
    } catch {
      // closed
    }
  })();

  const writer = await readyPeer(t, fwd.endpoint, { sealed: [{ prefix: 'vault/', secret: SECRET }] });
  const outsider = await readyPeer(t, fwd.endpoint);
  const other = await readyPeer(t, fwd.endpoint, { sealed: [{ prefix: 'vault/', secret: SECRET.toString('base64') }] });
  const watched: unknown[] = [];
  const stop = new AbortController();
  t.after(() => stop.abort());
  const watch = other.watch('vault/', { updatesOnly: true, signal: stop.signal });
  void (async () => {
    for await (const e of watch) watched.push(e.value);
  })().catch(() => {});

  await within('subscriber connected', waitFor('a raw subscription', () => fwd.stats().subscriptions > 0));
  const value = { password: MARKER, port: 5432 };
  await writer.set('vault/db', value);
  await writer.set('open/x', MARKER);
  assert.deepEqual(writer.get('vault/db'), value);
  await waitFor('the other holder', () => (other.get('vault/db') as { password?: string } | undefined)?.password === MARKER);
  await waitFor('the watch', () => watched.length === 1);
  assert.deepEqual(watched[0], value);

  await waitFor('the outsider', () => outsider.get('open/x') !== undefined);
  const marker = outsider.get('vault/db');
  assert.ok(marker instanceof SealedValue, `got ${String(marker)}`);
  assert.equal(marker.reason, 'no-secret');
  assert.equal(outsider.get('open/x'), MARKER, 'only the sealed subtree is sealed');
  assert.equal(outsider.stats().sealedUnopened, 0);
  assert.equal(JSON.stringify(marker).includes(MARKER), false);

  // What the forwarder published: marked sealed, never the plaintext.
  await waitFor('published', () => published.length >= 1);
  const [, , , props, body] = published[0]! as [Buffer, Buffer, Buffer, Buffer, Buffer];
  assert.equal(propMap(props).get('enc'), 'sealed');
  assert.equal(body.includes(MARKER), false);
  assert.equal(body.length, 24 + 16 + encodeValue(value).length, 'nonce + box (tag + the msgpack body)');

  // A peer joining later gets it through its snapshot; the history opens too.
  const late = await readyPeer(t, fwd.endpoint, { sealed: [{ prefix: 'vault/', secret: SECRET }] });
  assert.deepEqual(late.get('vault/db'), value);
  const history = await late.history('vault/db');
  assert.deepEqual(history[0]!.value, value);

  // A wrong secret: the marker, counted.
  const wrong = await readyPeer(t, fwd.endpoint, { sealed: [{ prefix: 'vault/', secret: randomBytes(32) }] });
  const w = wrong.get('vault/db');
  assert.ok(w instanceof SealedValue && w.reason === 'cannot-open');
  assert.equal(wrong.stats().sealedUnopened, 1);

  // A tampered body (one bit flipped), written by a plain CHP writer: the marker, counted.
  const tampered = Buffer.from(body);
  tampered[tampered.length - 3]! ^= 1;
  const pub = new zmq.XPublisher({ linger: 0 });
  t.after(() => pub.close());
  pub.connect(fwd.endpoints.collector);
  await within('collector subscribed', pub.receive());
  await pub.send([Buffer.from('vault/tampered'), ZERO_SEQ, EMPTY, encodeProperties([['enc', 'sealed']]), tampered]);
  await waitFor('the tampered value', () => other.get('vault/tampered') !== undefined);
  const tv = other.get('vault/tampered');
  assert.ok(tv instanceof SealedValue && tv.reason === 'cannot-open', `got ${String(tv)}`);
  assert.equal(other.stats().sealedUnopened, 1);
});

test('bad sealed options are named', async () => {
  const { Peer } = await import('../src/index.ts');
  assert.throws(() => new Peer({ sealed: [{ prefix: 'v/', secret: randomBytes(16) }] }), /sealed\[0\]\.secret/);
  assert.throws(() => new Peer({ sealed: [{ prefix: '', secret: randomBytes(32) }] }), /sealed\[0\]\.prefix/);
  assert.throws(() => new Peer({ sealed: [{ prefix: 'v/', secret: 'not base64!' }] }), /sealed\[0\]\.secret/);
  assert.throws(() => new Peer({ sealed: 'x' as never }), /"sealed"/);
});
