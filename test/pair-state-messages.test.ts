/**
 * The pair's state messages (src/forwarder/pair/state-messages.ts): a REPL or COPY carries its
 * updates in one frame, as the record bytes the receiver's disk then stores unchanged, and
 * anything that does not read exactly as such a frame is refused.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeState, encodeState, type Replication } from '../src/forwarder/pair/state-messages.ts';
import { encodeRecord, type TimedRecord } from '../src/store/record-codec.ts';

const session = 'aaaaaaaaaaaaaaaa';
const to = 'bbbbbbbbbbbbbbbb';

function records(first: number, n: number): TimedRecord[] {
  return Array.from({ length: n }, (_, i) => ({
    record: { seq: first + i, key: `k${i}`, uuid: Buffer.alloc(16, i), properties: Buffer.from('ttl=5\n'), body: Buffer.from(`v${i}`), expiresAt: i === 1 ? 123456 : 0, ...(i === 2 ? { owner: 'ab12' } : {}) },
    at: 1000 + i,
  }));
}

function repl(first: number, rs: TimedRecord[]): Replication {
  return { kind: 'repl', session, to, start: false, epoch: 'e1', term: 2, lineage: [[1, 1], [2, 5]], first, outcomes: [], records: rs };
}

test('a REPL message is three frames whatever its updates, and decodes to the same updates with the bytes both disks store', () => {
  const sent = records(7, 3);
  const frames = encodeState(repl(7, sent));
  assert.equal(frames.length, 3);
  const m = decodeState(frames);
  assert.ok(m !== undefined && m.kind === 'repl');
  assert.equal(m.records.length, 3);
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(m.records[i]!.record, sent[i]!.record);
    assert.equal(m.records[i]!.at, sent[i]!.at);
    // The sender encoded each record once (kept for its own disk); the receiver keeps the same bytes for its disk.
    assert.deepEqual(m.records[i]!.encoded, encodeRecord(sent[i]!.record, sent[i]!.at));
    assert.ok(sent[i]!.encoded !== undefined);
  }
  const empty = encodeState(repl(10, []));
  assert.equal(empty.length, 3);
  assert.deepEqual((decodeState(empty) as Replication).records, []);
});

test('a damaged, truncated, overlong or out-of-order packed frame is refused', () => {
  const [kind, header, packed] = encodeState(repl(7, records(7, 3)));
  const cases: Buffer[][] = [
    [kind!, header!, packed!.subarray(0, packed!.length - 1)],
    [kind!, header!, Buffer.concat([packed!, Buffer.from([1])])],
    [kind!, header!, packed!, packed!],
    [kind!, header!],
  ];
  const flipped = Buffer.from(packed!);
  flipped[20] = flipped[20]! ^ 0x40;
  cases.push([kind!, header!, flipped]);
  const overrun = Buffer.from(packed!);
  overrun.writeUInt32LE(overrun.readUInt32LE(0) + 1, 0);
  cases.push([kind!, header!, overrun]);
  // Records that do not follow `first` one by one.
  cases.push(encodeState(repl(8, records(7, 3))));
  for (const c of cases) assert.equal(decodeState(c), undefined);
});
