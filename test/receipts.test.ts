/**
 * Signed receipts from named recipients (issue 10): `set(…, { confirmBy })` resolves only once
 * each named identity has applied this exact write and sent back a receipt it signed.
 *
 * Real forwarder and peers on tcp://127.0.0.1. Forged receipts are written by a plain peer
 * through a forwarder run without a policy (so it publishes anything), after reading the
 * write's uuid and sequence off a raw subscriber.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as zmq from 'zeromq';
import { ErrorCode, generateIdentity, Policy, UnconfirmedError, type Identity } from '../src/index.ts';
import { confirmWrite, type ReceiptSource } from '../src/peer/receipts.ts';
import { receiptKey, signReceipt } from '../src/security/receipt.ts';
import { encodeValue } from '../src/protocol/values.ts';
import type { WatchEntry } from '../src/types.ts';
import { forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';
import { received } from './raw-sockets.ts';

const op = generateIdentity();
const billing = generateIdentity();
const auth = generateIdentity();
const ghost = generateIdentity(); // named in the policy, never runs
const mallory = generateIdentity(); // in no policy
const POLICY_TEXT = `writers:
  - name: op
    key: ${op.id}
    prefixes: [config/]
  - name: billing
    key: ${billing.id}
    prefixes: []
  - name: auth
    key: ${auth.id}
    prefixes: []
  - name: ghost
    key: ${ghost.id}
    prefixes: []
`;
const POLICY = Policy.parse(POLICY_TEXT, 'test policy');

function recipient(t: Parameters<typeof peer>[0], endpoint: string, identity: Identity, subtree = 'config/') {
  return readyPeer(t, endpoint, { identity, policy: POLICY, subtree });
}

test('two named recipients confirm: set resolves, through a forwarder enforcing the policy', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  await recipient(t, fwd.endpoint, billing);
  await recipient(t, fwd.endpoint, auth);
  // Created and written at once: the receipts inbox is made by this first write.
  const writer = peer(t, fwd.endpoint, { identity: op, policy: POLICY, subtree: 'config/' });
  for (let i = 0; i < 10; i++) {
    const seq = await within('confirmed write', writer.set('config/a', i, { confirmBy: ['billing', 'auth'], timeout: 8000 }));
    assert.equal(writer.get('config/a'), i);
    assert.ok(seq > 0);
  }
  // Many at once, to different keys: each waits for its own receipts.
  const seqs = await within('concurrent confirmed writes', Promise.all(Array.from({ length: 30 }, (_, i) => writer.set(`config/m${i}`, i, { confirmBy: ['billing', 'auth'], timeout: 8000 }))));
  assert.equal(new Set(seqs).size, 30);
  assert.equal(fwd.stats().unauthorized, 0, 'receipts are writes the policy allows');
});

test('a named recipient that is absent: rejects within the timeout naming it, and only it', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  await recipient(t, fwd.endpoint, billing);
  const writer = await readyPeer(t, fwd.endpoint, { identity: op, policy: POLICY });
  const started = Date.now();
  const err = await within(
    'rejection',
    writer.set('config/b', 1, { confirmBy: ['billing', 'ghost'], timeout: 1500 }).then(
      () => assert.fail('resolved without ghost'),
      (e: unknown) => e,
    ),
  );
  const elapsed = Date.now() - started;
  assert.ok(err instanceof UnconfirmedError, String(err));
  assert.equal(err.code, ErrorCode.Unconfirmed);
  assert.deepEqual(err.unconfirmed, ['ghost']);
  assert.ok(typeof err.version === 'number' && err.version > 0, 'the write itself was sequenced');
  assert.match(err.message, /ghost/);
  assert.doesNotMatch(err.message, /billing/);
  assert.ok(elapsed >= 1400 && elapsed < 4000, `rejected after ${elapsed} ms`);
  // Bad names are refused at once.
  await assert.rejects(writer.set('config/b', 1, { confirmBy: ['nobody'] }), { code: ErrorCode.InvalidOption, message: /nobody/ });
  // Closing the writer ends a wait for receipts at once.
  const closing = await readyPeer(t, fwd.endpoint, { identity: op, policy: POLICY });
  const waiting = closing.set('config/b', 2, { confirmBy: ['ghost'], timeout: 20_000 });
  await waitFor('sequenced', () => writer.get('config/b') === 2 || fwd.stats().sequence > 0);
  const closedAt = Date.now();
  void closing.close();
  await assert.rejects(within('rejected at close', waiting, 5000), { code: ErrorCode.Closed });
  assert.ok(Date.now() - closedAt < 3000);
  const plain = peer(t, fwd.endpoint, { identity: op });
  await assert.rejects(plain.set('config/b', 1, { confirmBy: ['billing'] }), { code: ErrorCode.InvalidOption, message: /policy/ });
});

test('receipts by another identity, or for another version, body or key, never count; the genuine one does', async (t) => {
  const fwd = await forwarder(t); // no policy: publishes the forgeries
  const authPeer = await recipient(t, fwd.endpoint, auth);
  const forger = await readyPeer(t, fwd.endpoint); // unsigned writes, published as they are
  const spy = new zmq.Subscriber();
  t.after(() => spy.close());
  spy.connect(fwd.endpoints.publisher);
  spy.subscribe('config/');
  const seen = received(spy);
  const writer = await readyPeer(t, fwd.endpoint, { identity: op, policy: POLICY });
  await writer.set('config/warmup', 0); // the spy's subscription is surely in place after this
  await within('spy sees the warm-up', seen.next());

  const forge = async (genuineToo: boolean): Promise<number> => {
    const pending = writer.set('config/c', 'v', { confirmBy: ['billing', 'auth'], timeout: genuineToo ? 8000 : 2000 });
    const frames = (await within('the write on the wire', seen.next())).value as Buffer[];
    const [key, seqFrame, uuid, , body] = frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
    assert.equal(key.toString(), 'config/c');
    const seq = Number(seqFrame.readBigUInt64BE());
    const at = receiptKey(op.signer, uuid, billing.signer);
    const forgeries = [
      signReceipt(mallory, op.signer, key, uuid, seq, body), // another identity
      signReceipt(auth, op.signer, key, uuid, seq, body), // a named identity, but not billing
      signReceipt(billing, op.signer, key, uuid, seq + 1, body), // another version
      signReceipt(billing, op.signer, key, uuid, seq, encodeValue('other')), // another body
      signReceipt(billing, op.signer, Buffer.from('config/other'), uuid, seq, body), // another key
      signReceipt(billing, auth.signer, key, uuid, seq, body), // another writer
      { ...signReceipt(billing, op.signer, key, uuid, seq, body), seq: seq + 1 }, // tampered
    ];
    for (const f of forgeries) await forger.set(at, f);
    if (genuineToo) await forger.set(at, signReceipt(billing, op.signer, key, uuid, seq, body));
    return pending;
  };
  const err = await forge(false).then(
    () => assert.fail('forged receipts counted'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof UnconfirmedError, String(err));
  assert.deepEqual(err.unconfirmed, ['billing'], 'auth confirmed for real, billing only by forgeries');
  // The same forgeries, then billing's genuine receipt (its key, this write): resolves.
  await within('confirmed by the genuine receipt', forge(true));
  assert.ok(authPeer.stats().unauthorized === 0);
});

test('a recipient that gets the write in its snapshot (joining after it) confirms it', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  const writer = await readyPeer(t, fwd.endpoint, { identity: op, policy: POLICY });
  const watcher = await readyPeer(t, fwd.endpoint, { subtree: 'config/' });
  const pending = writer.set('config/late', 'x', { confirmBy: ['billing'], timeout: 8000 });
  let settled = false;
  pending.then(() => (settled = true), () => (settled = true));
  await waitFor('the write is applied', () => watcher.get('config/late') === 'x');
  assert.equal(settled, false, 'not confirmed before billing exists');
  const late = await recipient(t, fwd.endpoint, billing);
  await within('confirmed from the snapshot', pending);
  assert.equal(late.get('config/late'), 'x');
});

test('a receipt that arrives before the acknowledgement, or is already held, is not missed', async () => {
  // A stand-in for the receipts peer: deterministic ordering of receipt vs acknowledgement.
  const writerKey = Buffer.from('config/f');
  const body = encodeValue(1);
  const uuid = Buffer.alloc(16, 7);
  const map = new Map<string, unknown>();
  const listeners = new Set<(e: WatchEntry) => void>();
  const source: ReceiptSource = {
    ready: async () => {},
    get: (k) => map.get(k),
    on: (_e, l) => listeners.add(l),
    off: (_e, l) => listeners.delete(l),
    close: async () => {},
    closed: () => new Promise<void>(() => {}),
  };
  const recipients = ['billing', 'auth'].map((n) => POLICY.named(n)!);
  const push = (id: Identity, seq: number): void => {
    const key = receiptKey(op.signer, uuid, id.signer);
    const value = signReceipt(id, op.signer, writerKey, uuid, seq, body);
    map.set(key, value);
    for (const l of listeners) l({ key, operation: 'put', value, previous: undefined, version: 1, isUpdate: true, fromResync: false });
  };
  const seq = await confirmWrite(Promise.resolve(source), {
    key: 'config/f',
    keyBytes: writerKey,
    body,
    writer: op.signer,
    recipients,
    timeout: 2000,
    send: async (_remaining, onUuid) => {
      onUuid(uuid);
      push(billing, 42); // through the listener, before the acknowledgement
      map.set(receiptKey(op.signer, uuid, auth.signer), signReceipt(auth, op.signer, writerKey, uuid, 42, body)); // held, never announced
      return 42;
    },
  });
  assert.equal(seq, 42);
  assert.equal(listeners.size, 0, 'the listener is removed');
});

test('the policy lets each identity it names write its own receipts, and nobody else\'s', () => {
  const uuid = Buffer.alloc(16, 1);
  const b = POLICY.writer(billing.signer)!;
  assert.equal(b.mayWrite(Buffer.from(receiptKey(op.signer, uuid, billing.signer))), true);
  assert.equal(b.mayWrite(Buffer.from(receiptKey(op.signer, uuid, auth.signer))), false);
  assert.equal(b.mayWrite(Buffer.from('config/a')), false, 'prefixes: [] writes nothing else');
  assert.equal(b.mayWrite(Buffer.from(`$receipts/${op.signer}/x/${billing.signer}`)), false, 'only a receipt key shape');
  assert.throws(() => Policy.parse(POLICY_TEXT + `  - name: op\n    key: ${mallory.id}\n    prefixes: []\n`), { message: /name "op" is given twice/ });
});
