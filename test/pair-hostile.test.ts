/**
 * Hostile bytes on a pair's state port: garbage frames, messages that read almost right, and a
 * stranger claiming to be an active with a higher term. None crashes a member, changes a role,
 * or corrupts replication; each is counted (`stats().pair.refused`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { encodeRecord } from '../src/store/record-codec.ts';
import { readyPeer, waitFor } from './helpers.ts';
import { startPair } from './pair-helpers.ts';
import { rawDealer } from './raw-sockets.ts';

const session = (): string => randomBytes(8).toString('hex');
const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

test('garbage, forged and stale state messages are refused and counted; roles, terms and replication are unchanged', async (t) => {
  const { primary, backup } = await startPair(t);
  const p = await readyPeer(t, primary.endpoint);
  await p.set('before', 1);
  const epoch = primary.epoch;
  const record = encodeRecord({ seq: 1, key: 'evil', uuid: Buffer.alloc(0), properties: Buffer.alloc(0), body: Buffer.from('x'), expiresAt: 0 }, Date.now());
  const broken = Buffer.from(record);
  broken.writeUInt8(broken.readUInt8(broken.length - 1) ^ 0xff, broken.length - 1);
  // A REPL/COPY carries its records in one frame, each after its u32 length.
  const packed = (...records: Buffer[]): Buffer => Buffer.concat(records.flatMap((r) => [Buffer.from(Uint32Array.of(r.length).buffer), r]));
  const overrun = packed(record);
  overrun.writeUInt32LE(record.length + 1, 0);
  const replHeader = (): Buffer => json({ session: session(), to: '', start: true, epoch, term: 99, lineage: [], first: 1, outcomes: [] });
  const messages: Buffer[][] = [
    [Buffer.from('x')],
    [Buffer.alloc(0), Buffer.alloc(0)],
    [Buffer.from('CKPAIR-BEAT'), Buffer.from('{not json')],
    [Buffer.from('CKPAIR-BEAT'), json([1, 2, 3])],
    [Buffer.from('CKPAIR-BEAT'), json({ session: 'zz', to: '' })],
    [Buffer.from('CKPAIR-BEAT'), json({ session: session(), to: '', configured: 'primary', role: 'active', term: 1e300, epoch, sequence: 1, applied: 0 })],
    [Buffer.from('CKPAIR-BEAT'), json({ session: session(), to: '', configured: 'boss', role: 'active', term: 5, epoch, sequence: 1, applied: 0 })],
    // A stranger claiming to be an active with a far higher term (well formed): not the partner.
    [Buffer.from('CKPAIR-BEAT'), json({ session: session(), to: '', configured: 'primary', role: 'active', term: 1000, epoch, sequence: 10 ** 9, applied: 0 })],
    [Buffer.from('CKPAIR-SYNC'), json({ session: session(), to: '', since: 0, epoch, lineage: [], full: true })],
    [Buffer.from('CKPAIR-SYNC'), json({ session: session(), to: '', since: 0, epoch, lineage: [[2, 1], [1, 5]], full: false })],
    [Buffer.from('CKPAIR-ACK'), json({ session: session(), to: session(), applied: 10 ** 9 })],
    [Buffer.from('CKPAIR-REPL'), json({ session: session(), to: '', start: true, epoch, term: 99, lineage: [], first: 1, outcomes: [] }), packed(record)],
    [Buffer.from('CKPAIR-REPL'), json({ session: session(), to: '', start: false, epoch, term: 99, lineage: [], first: 7, outcomes: [] }), packed(record)],
    [Buffer.from('CKPAIR-REPL'), json({ session: session(), to: '', start: true, epoch, term: 99, lineage: [], first: 1, outcomes: [] }), packed(broken)],
    [Buffer.from('CKPAIR-REPL'), replHeader(), overrun],
    [Buffer.from('CKPAIR-REPL'), replHeader(), Buffer.concat([packed(record), Buffer.from([1, 0])])],
    [Buffer.from('CKPAIR-REPL'), replHeader(), packed(record), packed(record)],
    [Buffer.from('CKPAIR-COPY'), json({ session: session(), to: '', copy: 'x', part: 0, done: true, epoch, term: 99, lineage: [], sequence: 0, outcomes: [['nothex', {}, 1]] }), packed(record)],
    [Buffer.from('CKPAIR-COPY'), json({ session: session(), to: '', copy: 'x', part: 0, done: true, epoch, term: 99, lineage: [], sequence: 5, outcomes: [] }), packed(record)],
  ];
  for (let i = 0; i < 50; i++) messages.push([randomBytes(1 + (i % 20)), randomBytes(i * 3)]);
  for (const target of [primary, backup]) {
    const d = rawDealer(t, target.stateEndpoint!);
    for (const m of messages) await d.dealer.send(m);
  }
  await waitFor('every message refused', () => primary.stats().pair!.refused >= messages.length && backup.stats().pair!.refused >= messages.length);
  assert.equal(primary.role, 'active');
  assert.equal(backup.role, 'passive');
  assert.equal(primary.term, 1);
  assert.equal(backup.term, 1);
  assert.equal(backup.epoch, epoch);
  // Replication goes on, and nothing forged was applied.
  for (let i = 0; i < 20; i++) {
    const seq = await p.set(`after${i}`, i);
    assert.ok(backup.sequence >= seq);
  }
  assert.equal(backup.sequence, primary.sequence);
  assert.equal(backup.size, primary.size);
  assert.equal(primary.stats().pair!.replication.state, 'replicating');
});
