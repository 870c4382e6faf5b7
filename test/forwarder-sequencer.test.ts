/**
 * The forwarder's write decisions without sockets: the Sequencer, UpdateLog and Presence
 * modules wired with stub outputs, fed KVSETs, checked against a table of outcomes and of what
 * would go on the wire (KVPUB with `prev`, HUGZ with `heads`, KVPRESENT).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Counters } from '../src/forwarder/counters.ts';
import { Presence } from '../src/forwarder/presence.ts';
import { Sequencer } from '../src/forwarder/sequencer.ts';
import { UpdateLog } from '../src/forwarder/update-log.ts';
import { decodeMessage, type ChpMessage } from '../src/protocol/message.ts';
import { headFor } from '../src/protocol/gaps.ts';

const ZERO = Buffer.alloc(8);

function rig() {
  const published: Buffer[][] = [];
  const replies: Buffer[][] = [];
  const deadlines: number[] = [];
  const counters = new Counters();
  let presence: Presence | undefined;
  const log = new UpdateLog({ send: (f) => published.push(f), onDeadline: (at) => deadlines.push(at), onOwner: (k, o) => presence!.written(k, o), counters });
  presence = new Presence({ log, counters, reply: (_to, f) => replies.push(f), peerTimeout: 1000 });
  const seq = new Sequencer({ log, presence, counters, settings: { maxValueBytes: 100, checkValues: true, dedupTtl: 60_000, dedupMax: 1000 }, epoch: 'e1' });
  return { published, replies, deadlines, counters, log, presence, seq };
}

function kvset(key: string, props = '', body: Buffer | string = 'v', uuid: Buffer = randomBytes(16)): ChpMessage {
  const d = decodeMessage([Buffer.from(key), ZERO, uuid, Buffer.from(props), Buffer.from(body)], Number.MAX_SAFE_INTEGER);
  assert.ok(d.ok);
  return d.message;
}

test('write decisions, as a table', () => {
  const r = rig();
  const cases: Array<[string, ChpMessage, RegExp]> = [
    ['plain value', kvset('a'), /^ok:1$/],
    ['over maxValueBytes', kvset('big', '', 'x'.repeat(101)), /^rejected:.*"big".*limit/],
    ['reserved command key', kvset('KTHXBAI'), /^rejected:.*reserved/],
    ['reserved presence key', kvset('$peers/x'), /^rejected:.*reserved/],
    ['c1 marked msgpack', kvset('m', 'enc=msgpack\n', Buffer.from([0xc1])), /^rejected:.*"m".*msgpack/],
    ['c1 unmarked', kvset('raw', '', Buffer.from([0xc1])), /^ok:2$/],
    ['owner of 300 chars', kvset('o', `owner=${'a'.repeat(300)}\n`), /^rejected:.*"o".*peer id/],
    ['ttl over a year', kvset('t', 'ttl=31536001\n'), /^rejected:.*"t"/],
    ['ttl NaN', kvset('t', 'ttl=NaN\n'), /^rejected:/],
    ['ttl of 3e6 s', kvset('t', 'ttl=3e6\n'), /^ok:3$/],
    ['if-version that lost', kvset('a', 'if-version=7\n'), /^conflict:1$/],
    ['if-version that won', kvset('a', 'if-version=1\n'), /^ok:4$/],
  ];
  for (const [name, msg, want] of cases) {
    const o = r.seq.write(msg);
    const got = o.status === 'ok' ? `ok:${o.seq}` : o.status === 'conflict' ? `conflict:${o.current}` : `rejected:${o.detail}`;
    assert.match(got, want, name);
  }
  assert.equal(r.counters.stats({ sequence: 0, keys: 0, peers: 0, subscriptions: 0, epoch: '', dedupEvictions: 0, historyOldest: 0, historySize: 0 }).rejected, 7);
  assert.deepEqual(r.deadlines.length, 1, 'one ttl deadline asked for');
  assert.equal(r.published.length, 0, 'nothing published: nobody subscribed');
});

test('a retried conditional write gets its first answer, not a conflict with itself', () => {
  const r = rig();
  const uuid = randomBytes(16);
  assert.deepEqual(r.seq.write(kvset('lock', 'if-version=0\n', 'me', uuid)), { status: 'ok', seq: 1 });
  assert.deepEqual(r.seq.write(kvset('lock', 'if-version=0\n', 'me', uuid)), { status: 'ok', seq: 1 });
  assert.equal(r.log.store.sequence, 1);
});

test('KVPUB carries prev for subscribed prefixes; HUGZ heads name each one; a resubscription keeps the head', () => {
  const r = rig();
  r.log.heads.subscribe('app/', r.log.store.sequence);
  r.seq.write(kvset('app/x'));
  r.seq.write(kvset('other'));
  r.log.heads.unsubscribe('app/');
  r.seq.write(kvset('app/y')); // missed while unsubscribed
  r.log.heads.subscribe('app/', r.log.store.sequence);
  r.log.heartbeat('e1');
  const [pub, hugz] = r.published as [Buffer[], Buffer[]];
  assert.equal(r.published.length, 2, 'one KVPUB (app/x) and one HUGZ');
  assert.match(pub[3]!.toString(), /prev=4:0\n$/);
  const heads = /heads=([^\n]*)/.exec(hugz[3]!.toString())![1]!;
  assert.equal(headFor(heads, Buffer.from('app/')), 3, 'the head includes the write made while unsubscribed');
});

test('an owner first seen in a write is registered as unknown, and its first beat gets KVPRESENT', () => {
  const r = rig();
  const id = 'ab12';
  r.seq.write(kvset('lock', `owner=${id}\n`));
  assert.equal(r.presence.list()[0]?.name, 'unknown');
  const beat = decodeMessage([Buffer.from('KVBEAT'), ZERO, Buffer.alloc(0), Buffer.from(`owner=${id}\nname=svc\n`), Buffer.alloc(0)], 1);
  assert.ok(beat.ok);
  r.presence.beat(Buffer.from('ckv1x'), beat.message);
  r.presence.beat(Buffer.from('ckv1x'), beat.message);
  assert.equal(r.replies.length, 1, 'one KVPRESENT, for the first beat only');
  assert.equal(r.replies[0]![0]!.toString(), 'KVPRESENT');
  assert.equal(Number(r.replies[0]![1]!.readBigInt64BE()), 1, 'the presence key was written first, at sequence 1');
  assert.equal(r.presence.list()[0]?.name, 'svc');
});
