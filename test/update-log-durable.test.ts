/**
 * The update log of a durable forwarder, against a journal (the disk) that can be told to fail:
 * in `sync` mode nothing is published or acknowledged before its group is on disk, a snapshot
 * shows only what is, and a group the disk refuses is undone in memory (values, deletes, ttl,
 * owners, sequence) and its writers told, after which the next group is stored normally.
 *
 * Topology: no sockets; an UpdateLog with an in-memory journal and recording hooks.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { StorageError } from '../src/errors.ts';
import { Counters } from '../src/forwarder/counters.ts';
import { UpdateLog, type StoreFailure } from '../src/forwarder/update-log.ts';
import type { TimedRecord } from '../src/store/record-codec.ts';

const EMPTY = Buffer.alloc(0);

function setup(durability: 'sync' | 'async' = 'sync') {
  const disk: TimedRecord[][] = [];
  const journal = {
    fail: false,
    commit(records: readonly TimedRecord[]): void {
      if (journal.fail) throw new StorageError('/data', 'disk full at /data');
      disk.push([...records]);
    },
  };
  const sent: string[] = [];
  const owners = new Map<string, string>();
  const undone: number[] = [];
  const log = new UpdateLog({
    send: (frames) => sent.push(frames[0]!.toString('latin1')),
    onDeadline: () => {},
    onOwner: (key, owner) => (owner === undefined ? owners.delete(key) : owners.set(key, owner)),
    ownerOf: (key) => owners.get(key),
    onUndone: (r) => undone.push(r.seq),
    counters: new Counters(),
    journal,
    durability,
  });
  // Someone subscribed to everything: every publish is sent.
  log.heads.subscribe('', 0);
  const put = (key: string, value: string, owner?: string, ttlMs = 0): number =>
    log.append(Buffer.from(key, 'latin1'), key, EMPTY, EMPTY, Buffer.from(value), ttlMs, Date.now(), owner);
  const del = (key: string): number => log.append(Buffer.from(key, 'latin1'), key, EMPTY, EMPTY, EMPTY, 0, Date.now(), undefined);
  const settled = (): { failure?: StoreFailure; called: boolean } => {
    const s: { failure?: StoreFailure; called: boolean } = { called: false };
    log.whenPublished((f) => {
      s.called = true;
      if (f !== undefined) s.failure = f;
    });
    return s;
  };
  const value = (key: string): string | undefined => log.store.get(key)?.body.toString();
  return { log, journal, disk, sent, owners, undone, put, del, settled, value };
}

test('sync: published and acknowledged only once on disk; a snapshot shows only what is on disk', () => {
  const { log, disk, sent, put, settled, value } = setup();
  put('a', 'x1');
  const first = settled();
  assert.deepEqual(sent, [], 'nothing published before the commit');
  assert.equal(first.called, false, 'nobody answered before the commit');
  assert.equal(log.flush(), true);
  assert.deepEqual(sent, ['a']);
  assert.equal(first.called, true);
  assert.equal(disk.length, 1);

  put('a', 'x2');
  put('b', 'y');
  // In memory the next write already sees them (conditional writes decide on it)...
  assert.equal(value('a'), 'x2');
  // ...but a snapshot, and the sequence it announces, hold only what is on disk.
  assert.deepEqual(
    log.snapshot('').map(([k, e]) => [k, e.body.toString()]),
    [['a', 'x1']],
  );
  assert.equal(log.publishedSequence, 1);
  log.flush();
  assert.deepEqual(
    log.snapshot('').map(([k, e]) => [k, e.body.toString()]).sort(),
    [
      ['a', 'x2'],
      ['b', 'y'],
    ],
  );
});

test('sync: a group the disk refuses is undone (values, deletes, ttl, owners, sequence) and its writers told; the next is stored', () => {
  const { log, journal, disk, sent, owners, undone, put, del, settled, value } = setup();
  put('a', 'x1', 'aa');
  put('gone', 'g');
  put('ttl', 't', undefined, 60_000);
  log.flush();
  assert.equal(log.store.sequence, 3);
  sent.length = 0;

  journal.fail = true;
  put('a', 'x2'); // overwrite, ending the ownership
  del('gone');
  put('ttl', 't2');
  put('new', 'n', 'bb');
  const waiting = settled();
  // Undone, memory again equals the disk: nothing is left unwritten.
  assert.equal(log.flush(), true);
  assert.deepEqual(waiting.failure?.fromSeq, 4, 'writers from sequence 4 on are told');
  assert.match(waiting.failure?.error.message ?? '', /disk full/);
  assert.deepEqual(sent, [], 'nothing of it was published');
  assert.deepEqual(undone.sort(), [4, 5, 6, 7]);
  // Memory is back to what the disk holds.
  assert.equal(value('a'), 'x1');
  assert.equal(owners.get('a'), 'aa');
  assert.equal(value('gone'), 'g');
  assert.equal(value('ttl'), 't');
  assert.ok((log.store.get('ttl')?.expiresAt ?? 0) > Date.now(), 'its ttl too');
  assert.equal(value('new'), undefined);
  assert.equal(owners.has('new'), false);
  assert.equal(log.store.sequence, 3);
  assert.equal(log.store.size, 3);

  // Room again: the next write takes sequence 4 and is stored and published.
  journal.fail = false;
  assert.equal(put('later', 'l'), 4);
  const ok = settled();
  assert.equal(log.flush(), true);
  assert.equal(ok.called, true);
  assert.equal(ok.failure, undefined);
  assert.deepEqual(sent, ['later']);
  assert.deepEqual(disk.at(-1)?.map((t) => t.record.seq), [4]);
});

test('async: published at once; a refused group is kept and written again, and writes are refused meanwhile', () => {
  const { log, journal, disk, sent, put, settled } = setup('async');
  put('a', 'x1');
  assert.deepEqual(sent, ['a'], 'published before the commit');
  assert.equal(settled().called, true);
  journal.fail = true;
  assert.equal(log.flush(), false);
  assert.ok(log.failure instanceof StorageError, 'the sequencer refuses new writes while this is set');
  journal.fail = false;
  assert.equal(log.flush(), true);
  assert.equal(log.failure, undefined);
  assert.deepEqual(disk.flat().map((t) => t.record.key), ['a'], 'the kept group reached the disk');
  log.stop();
});
