/**
 * A retry is applied once, however long it takes (issue 7, item 6). The forwarder remembers
 * write outcomes by uuid for a time (`dedupTtl`), not for a count of later writes: 100,000
 * writes go by in about a second at full speed, while peers retry for their whole write
 * timeout. A memory cap (`dedupMax`) guards the rest, and what it forces out early is counted.
 *
 * Topology: a Forwarder (ROUTER P, XPUB P+1, SUB P+2) and a raw DEALER (routing id starting
 * "ckv1") on P sending KVSETs (answered with KVACK) and KVWRITE batches (answered with KVACKS).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import type { Forwarder } from '../src/index.ts';
import { entrySize, packBatch, type WireEntry } from '../src/protocol/batch.ts';
import { forwarder, waitFor } from './helpers.ts';
import { EMPTY, rawDealer, ZERO_SEQ } from './raw-sockets.ts';

function rawWriter(t: TestContext, fwd: Forwarder) {
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true, sendHighWaterMark: 0 });
  /** One KVSET; resolves with its KVACK's status and sequence. */
  const write = async (key: string, uuid: Buffer, properties = ''): Promise<{ status: string; seq: number }> => {
    await dealer.send([Buffer.from(key), ZERO_SEQ, uuid, Buffer.from(properties), Buffer.from('v')]);
    const ack = await inbox.next(`the KVACK for ${key}`);
    assert.equal(ack[0]!.toString(), 'KVACK');
    assert.deepEqual(ack[2], uuid);
    return { status: /status=(\w+)/.exec(ack[3]!.toString())![1]!, seq: Number(ack[1]!.readBigInt64BE()) };
  };
  /** `count` distinct writes in KVWRITE batches of 1,000; resolves once all are acknowledged. */
  const fill = async (count: number): Promise<void> => {
    const batches = Math.ceil(count / 1000);
    for (let b = 0; b < batches; b++) {
      const entries: WireEntry[] = [];
      for (let i = b * 1000; i < Math.min(count, (b + 1) * 1000); i++) {
        entries.push({ key: `fill/${i % 500}`, sequence: 0, uuid: randomBytes(16), properties: EMPTY, body: Buffer.from('x') });
      }
      await dealer.send([Buffer.from('KVWRITE'), ZERO_SEQ, EMPTY, EMPTY, packBatch(entries, entries.reduce((n, e) => n + entrySize(e), 0))]);
    }
    for (let b = 0; b < batches; b++) {
      const acks = await inbox.next('a KVACKS', 30_000);
      assert.equal(acks[0]!.toString(), 'KVACKS');
      // Item 5 (read-your-writes across a restart): every KVACKS names the run that sequenced it.
      assert.equal(acks[3]!.toString(), `epoch=${fwd.epoch}\n`);
    }
  };
  return { write, fill };
}

test('a retry after 150,000 other writes is still recognised, and a conditional retry does not conflict with itself', async (t) => {
  // Defaults: dedupTtl 60 s, dedupMax 500,000. (The old count-bounded window held 100,000.)
  const fwd = await forwarder(t);
  const w = rawWriter(t, fwd);
  const plain = randomBytes(16);
  const conditional = randomBytes(16);
  const first = await w.write('retry/plain', plain);
  const firstCond = await w.write('retry/cond', conditional, 'if-version=0\n');
  assert.equal(first.status, 'ok');
  assert.equal(firstCond.status, 'ok');

  await w.fill(150_000);
  const sequence = fwd.sequence;
  const duplicates = fwd.stats().duplicates;

  assert.deepEqual(await w.write('retry/plain', plain), first, 'the retry gets the first answer');
  assert.deepEqual(await w.write('retry/cond', conditional, 'if-version=0\n'), firstCond, 'no conflict with its own first attempt');
  assert.equal(fwd.sequence, sequence, 'neither retry was applied again');
  assert.equal(fwd.stats().duplicates, duplicates + 2);
  assert.equal(fwd.stats().dedupEvictions, 0);
});

test('the cap forces out young outcomes, and that is counted', async (t) => {
  const fwd = await forwarder(t, { dedupMax: 1000 });
  const w = rawWriter(t, fwd);
  const uuid = randomBytes(16);
  const first = await w.write('evicted/a', uuid);
  await w.fill(1500);
  assert.equal(fwd.stats().dedupEvictions, 501, 'the first write and 500 fill writes were forced out');
  // Documented consequence: a retry of a forced-out write is applied again.
  const again = await w.write('evicted/a', uuid);
  assert.equal(again.status, 'ok');
  assert.ok(again.seq > first.seq);
});

test('an outcome older than dedupTtl is forgotten without counting an eviction', async (t) => {
  const fwd = await forwarder(t, { dedupTtl: 30, heartbeatInterval: 10 });
  const w = rawWriter(t, fwd);
  const uuid = randomBytes(16);
  const first = await w.write('old/a', uuid);
  const beats = fwd.stats().heartbeats;
  await waitFor('more than dedupTtl to pass (heartbeats)', () => fwd.stats().heartbeats >= beats + 6);
  const again = await w.write('old/a', uuid);
  assert.ok(again.seq > first.seq, 'applied again after dedupTtl');
  assert.equal(fwd.stats().dedupEvictions, 0);
});
