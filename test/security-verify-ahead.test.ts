/**
 * Verify ahead, decide in order (src/security/verify-ahead.ts): signatures are checked on the
 * threadpool while messages wait in one FIFO, and each message is handled in arrival order.
 * Checks: the FIFO keeps arrival order whatever order the checks finish in; a verdict is never
 * borrowed by a message that reuses a signature over other bytes; through a real forwarder
 * and a verifying peer, many concurrent signed writers keep their order per writer and every
 * write is applied exactly once; a bad signature in the middle of a KVWRITE batch refuses that
 * write only.
 *
 * Topology: a Forwarder with a policy (ROUTER P, XPUB P+1, SUB P+2); clonekv peers with
 * identities; a verifying reader peer; a raw DEALER sending a hand-made KVWRITE batch.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { generateIdentity, Policy, type Identity } from '../src/index.ts';
import { entrySize, packBatch, unpackBatch, type WireEntry } from '../src/protocol/batch.ts';
import { encodeProperties, PropertyView } from '../src/protocol/properties.ts';
import { encodeValue } from '../src/protocol/values.ts';
import { checkWrite, signedPayload, signWrite } from '../src/security/signature.ts';
import { MAX_WAITING, VerifyAhead } from '../src/security/verify-ahead.ts';
import { forwarder, readyPeer, waitFor, within } from './helpers.ts';
import { rawDealer, ZERO_SEQ } from './raw-sockets.ts';

const alice = generateIdentity();
const bob = generateIdentity();
const POLICY = Policy.parse(`writers:\n  - name: alice\n    key: ${alice.id}\n    prefixes: [config/]\n  - name: bob\n    key: ${bob.id}\n    prefixes: [config/]\n`, 'test policy');

/** A signed write: key, uuid, body and its properties (as a reader). */
function signed(identity: Identity, key: string, value: unknown, uuid = randomBytes(16)) {
  const keyBytes = Buffer.from(key);
  const body = encodeValue(value);
  const props: Array<[string, string]> = [['enc', 'msgpack']];
  signWrite(identity, keyBytes, uuid, body, props);
  const raw = encodeProperties(props);
  return { key: keyBytes, uuid, body, raw, props: new PropertyView(raw) };
}

const keyOf = (signer: string) => POLICY.writer(signer)?.keyObject;

test('the FIFO handles messages in arrival order, whatever order their checks finish in', async () => {
  const ahead = new VerifyAhead(keyOf, (err) => assert.fail(`a handler threw: ${String(err)}`));
  const handled: number[] = [];
  const N = 400;
  let queuedSeen = 0;
  for (let i = 0; i < N; i++) {
    // Messages with 0 to 3 checks each, mixed: one with none still waits for those before it.
    const writes = Array.from({ length: i % 4 }, (_, j) => signed(j % 2 ? bob : alice, `config/k${i}-${j}`, i));
    ahead.schedule(
      () => {
        handled.push(i);
        // The decision finds the verdict reached ahead (no check on the spot is needed).
        for (const w of writes) assert.equal(checkWrite(POLICY, w.key, w.uuid, w.body, w.props, ahead), undefined);
      },
      (add) => {
        for (const w of writes) add(w.key, w.uuid, w.body, w.props);
      },
    );
    if (ahead.waiting > 0) queuedSeen++;
  }
  assert.ok(queuedSeen > 0, 'messages waited for their checks (the threadpool path ran)');
  await waitFor('every message handled', () => handled.length === N);
  assert.deepEqual(handled, Array.from({ length: N }, (_, i) => i));
  assert.equal(ahead.checkedAhead, Array.from({ length: N }, (_, i) => i % 4).reduce((a, b) => a + b, 0));
  assert.equal(ahead.waiting, 0);
});

test('a full queue asks the receive loop to wait; a handler that throws is reported and the queue goes on', async () => {
  const errors: unknown[] = [];
  const ahead = new VerifyAhead(keyOf, (err) => errors.push(err));
  const w = signed(alice, 'config/x', 1);
  const handled: number[] = [];
  let busy: Promise<void> | undefined;
  let i = 0;
  // As a receive loop does: schedule until told to wait.
  while (busy === undefined) {
    const n = i++;
    busy = ahead.schedule(
      () => {
        handled.push(n);
        if (n === 1) throw new Error('handler bug');
      },
      // The first message waits for its check; all the others wait behind it.
      n === 0 ? (add) => add(w.key, w.uuid, w.body, w.props) : undefined,
    );
    assert.ok(i <= MAX_WAITING + 1, 'told to wait once the queue is full');
  }
  assert.equal(ahead.waiting, MAX_WAITING);
  await within('the queue to drain enough', busy);
  assert.ok(ahead.waiting <= MAX_WAITING / 2);
  await waitFor('all handled', () => handled.length === i);
  assert.deepEqual(handled, Array.from({ length: i }, (_, n) => n));
  assert.equal(errors.length, 1);
});

test('a verdict is never borrowed: the same signature over other bytes, or by another signer, is checked on its own', async () => {
  const ahead = new VerifyAhead(keyOf, (err) => assert.fail(`a handler threw: ${String(err)}`));
  const good = signed(alice, 'config/a', 'the real value');
  const forgedBody = encodeValue('a forged value');
  const results: Array<string | undefined> = [];
  ahead.schedule(
    () => {
      results.push(checkWrite(POLICY, good.key, good.uuid, good.body, good.props, ahead)?.reason);
      // Same signature and signer, other value: its verdict is not the good one's.
      assert.equal(ahead.verdict(alice.signer, good.props.get('sig')!, signedPayload(good.key, good.uuid, forgedBody, (n) => good.props.get(n))), undefined);
      results.push(checkWrite(POLICY, good.key, good.uuid, forgedBody, good.props, ahead)?.reason);
      // Same bytes, claimed by another signer: no verdict either.
      assert.equal(ahead.verdict(bob.signer, good.props.get('sig')!, signedPayload(good.key, good.uuid, good.body, (n) => good.props.get(n))), undefined);
    },
    (add) => add(good.key, good.uuid, good.body, good.props),
  );
  await waitFor('handled', () => results.length === 2);
  assert.deepEqual(results, [undefined, 'bad-signature']);
  // A forged message checked ahead gets a bad verdict, and is refused.
  const forged = { ...good, body: forgedBody };
  let refusal: string | undefined;
  ahead.schedule(
    () => void (refusal = checkWrite(POLICY, forged.key, forged.uuid, forged.body, forged.props, ahead)?.reason),
    (add) => add(forged.key, forged.uuid, forged.body, forged.props),
  );
  await waitFor('forged handled', () => refusal !== undefined);
  assert.equal(refusal, 'bad-signature');
  // Verdicts are dropped once their message is handled.
  assert.equal(ahead.verdict(alice.signer, good.props.get('sig')!, signedPayload(good.key, good.uuid, good.body, (n) => good.props.get(n))), undefined);
});

test('many concurrent signed writers: each keeps its order, every write applied exactly once, all verified by a peer', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  const WRITERS = 6;
  const WRITES = 150;
  const reader = await readyPeer(t, fwd.endpoint, { policy: POLICY });
  const seen = new Map<string, number[]>();
  reader.on('update', (e: { key: string; value: unknown }) => {
    const list = seen.get(e.key) ?? [];
    list.push(e.value as number);
    seen.set(e.key, list);
  });
  const writers = await Promise.all(Array.from({ length: WRITERS }, (_, w) => readyPeer(t, fwd.endpoint, { identity: w % 2 ? bob : alice, subtree: 'none/' })));
  // Every write in flight at once: each writer's to one key, values 0..WRITES-1 in call order.
  const seqs = await within(
    'all writes acknowledged',
    Promise.all(writers.map((p, w) => Promise.all(Array.from({ length: WRITES }, (_, i) => p.set(`config/w${w}`, i))))),
    20_000,
  );
  for (const list of seqs) {
    for (let i = 1; i < list.length; i++) assert.ok(list[i]! > list[i - 1]!, 'a writer\'s writes are sequenced in the order it made them');
  }
  const all = seqs.flat();
  assert.equal(new Set(all).size, WRITERS * WRITES, 'every write has its own sequence');
  await waitFor('every update seen', () => [...seen.values()].reduce((n, l) => n + l.length, 0) === WRITERS * WRITES || undefined, 15_000);
  for (let w = 0; w < WRITERS; w++) assert.deepEqual(seen.get(`config/w${w}`), Array.from({ length: WRITES }, (_, i) => i), `writer ${w}'s values in order, each once`);
  assert.equal(reader.stats().unauthorized, 0);
  assert.equal(fwd.stats().unauthorized, 0);
  assert.equal(fwd.stats().duplicates, 0);
});

test('a bad signature in the middle of a KVWRITE batch refuses that write only', async (t) => {
  const fwd = await forwarder(t, { policy: POLICY });
  const reader = await readyPeer(t, fwd.endpoint, { policy: POLICY });
  const writes = Array.from({ length: 7 }, (_, i) => signed(i % 2 ? bob : alice, `config/b${i}`, `v${i}`));
  // Write 3 carries alice's valid signature of another value.
  const FORGED = 3;
  const entries: WireEntry[] = writes.map((w, i) => ({ key: w.key, sequence: 0, uuid: w.uuid, properties: w.raw, body: i === FORGED ? encodeValue('forged') : w.body }));
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  await dealer.send([Buffer.from('KVWRITE'), ZERO_SEQ, Buffer.alloc(0), Buffer.alloc(0), packBatch(entries, entries.reduce((n, e) => n + entrySize(e), 0))]);
  let acks: Buffer[] | undefined;
  while (acks === undefined) {
    const frames = await inbox.next('a KVACKS');
    if (frames[0]!.toString() === 'KVACKS') acks = frames;
  }
  const statuses: string[] = [];
  unpackBatch(acks[4]!, (a) => void statuses.push(/status=(\w+)/.exec(a.properties.toString())![1]!));
  assert.deepEqual(statuses, writes.map((_, i) => (i === FORGED ? 'unauthorized' : 'ok')));
  await waitFor('the good writes reached the reader', () => writes.every((w, i) => i === FORGED || reader.get(w.key.toString()) === `v${i}`) || undefined);
  assert.equal(reader.get(`config/b${FORGED}`), undefined);
  assert.equal(fwd.stats().unauthorized, 1);
  assert.equal(reader.stats().unauthorized, 0);
});
