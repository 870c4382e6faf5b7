/** Codecs and validation, no sockets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BatchError, entrySize, packBatch, unpackBatch, type WireEntry } from '../src/protocol/batch.ts';
import { SnapshotDigest } from '../src/protocol/digest.ts';
import { addPrevious, encodeHeads, headFor, previousFor, headId } from '../src/protocol/gaps.ts';
import { decodeMessage } from '../src/protocol/message.ts';
import { appendProperty, encodeProperties, parseProperties, PropertiesError, PropertyView } from '../src/protocol/properties.ts';
import { encodeSequence, readSequence } from '../src/protocol/sequence.ts';
import { decodeBody, encodeValue } from '../src/protocol/values.ts';

const b = (s: string): Buffer => Buffer.from(s);

test('properties: lenient where the reference was fragile, strict where input is wrong', () => {
  assert.deepEqual([...parseProperties(b('ttl=5\nenc=msgpack\n'))], [['ttl', '5'], ['enc', 'msgpack']]);
  assert.deepEqual([...parseProperties(b('a=1\nlast=no-newline'))], [['a', '1'], ['last', 'no-newline']]);
  assert.deepEqual([...parseProperties(b('url=x?a=b&c=d\n'))], [['url', 'x?a=b&c=d']]);
  assert.deepEqual([...parseProperties(b('empty=\n\n'))], [['empty', '']]);
  assert.equal(parseProperties(Buffer.alloc(0)).size, 0);
  assert.throws(() => parseProperties(b('no-equals\n')), PropertiesError);
  assert.throws(() => parseProperties(b('=value\n')), PropertiesError);
  assert.throws(() => parseProperties(Buffer.from([0x61, 0x3d, 0xff, 0x0a])), PropertiesError);
  assert.equal(encodeProperties([['a', '1'], ['b', 'x=y']]).toString(), 'a=1\nb=x=y\n');
  assert.throws(() => encodeProperties([['a=b', '1']]), PropertiesError);
  assert.throws(() => encodeProperties([['a', 'line\nbreak']]), PropertiesError);
  assert.equal(appendProperty(b('a=1'), 'prev', '0:1').toString(), 'a=1\nprev=0:1\n');
  assert.equal(appendProperty(b('a=1\n'), 'prev', '0:1').toString(), 'a=1\nprev=0:1\n');
  assert.equal(appendProperty(Buffer.alloc(0), 'prev', '0:1').toString(), 'prev=0:1\n');
});

test('PropertyView validates like parseProperties and reads values in place', () => {
  const frames = ['ttl=5\nenc=msgpack\n', 'a=1\nlast=no-newline', 'url=x?a=b&c=d\n', 'empty=\n\n', '', 'no-equals\n', '=value\n', 'ok=1\nbad\n'];
  for (const text of frames) {
    const frame = b(text);
    let parsed: Map<string, string> | undefined;
    try {
      parsed = parseProperties(frame);
    } catch {
      parsed = undefined;
    }
    if (parsed === undefined) {
      assert.throws(() => new PropertyView(frame), PropertiesError, text);
      continue;
    }
    const view = new PropertyView(frame);
    for (const [name, value] of parsed) assert.equal(view.get(name), value, `${text}: ${name}`);
    assert.equal(view.get('missing'), undefined);
    assert.equal(view.has('missing'), false);
  }
  assert.throws(() => new PropertyView(Buffer.from([0x61, 0x3d, 0xff])), PropertiesError);
  assert.equal(new PropertyView(b('enc=msgpack\nprev=0:1\n')).get('enc'), 'msgpack');
  assert.equal(new PropertyView(b('encx=1\nenc=2\n')).get('enc'), '2');
});

test('sequence: 8 bytes big-endian, negative and oversized refused', () => {
  for (const n of [0, 1, 255, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]) {
    const buf = encodeSequence(n);
    assert.equal(buf.length, 8);
    assert.equal(buf.readBigInt64BE(), BigInt(n));
    assert.equal(readSequence(buf), n);
  }
  const neg = Buffer.alloc(8);
  neg.writeBigInt64BE(-1n);
  assert.equal(readSequence(neg), -1);
  const huge = Buffer.alloc(8);
  huge.writeBigInt64BE(2n ** 62n);
  assert.equal(readSequence(huge), -1);
});

test('message validation names each malformed case', () => {
  const good = [b('k'), Buffer.alloc(8), Buffer.alloc(16), b('a=1\n'), b('v')];
  assert.equal(decodeMessage(good, 10).ok, true);
  const reason = (frames: Buffer[], max = 10) => {
    const d = decodeMessage(frames, max);
    return d.ok ? 'ok' : d.reason;
  };
  assert.equal(reason(good.slice(0, 4)), 'frame-count');
  assert.equal(reason([...good, b('extra')]), 'frame-count');
  assert.equal(reason([b(''), ...good.slice(1)]), 'empty-key');
  assert.equal(reason([Buffer.alloc(256, 0x61), ...good.slice(1)]), 'key-too-long');
  assert.equal(reason([b('k'), Buffer.alloc(7), ...good.slice(2)]), 'sequence-size');
  assert.equal(reason([b('k'), Buffer.alloc(8, 0xff), ...good.slice(2)]), 'sequence-range');
  assert.equal(reason([b('k'), Buffer.alloc(8), Buffer.alloc(5), ...good.slice(3)]), 'uuid-size');
  assert.equal(reason([...good.slice(0, 3), b('bad'), b('v')]), 'properties');
  assert.equal(reason(good, 0), 'value-too-large');
  assert.equal(reason([b('k'), Buffer.alloc(8), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(0)]), 'ok');
});

test('values: msgpack with the mark, raw bytes without', () => {
  const body = encodeValue({ a: [1, 'x'] });
  assert.deepEqual(decodeBody(body, true), { a: [1, 'x'] });
  const raw = decodeBody(b('plain'), false);
  assert.ok(raw instanceof Uint8Array);
  assert.equal(Buffer.from(raw as Uint8Array).toString(), 'plain');
  assert.throws(() => encodeValue(undefined), TypeError);
});

test('snapshot batches round-trip and reject truncation', () => {
  const entries: WireEntry[] = [
    { key: b('a'), sequence: 1, uuid: Buffer.alloc(16, 1), properties: b('enc=msgpack\n'), body: b('x') },
    { key: b('bb'), sequence: 2 ** 40, uuid: Buffer.alloc(0), properties: Buffer.alloc(0), body: Buffer.alloc(70_000, 7) },
  ];
  const size = entries.reduce((n, e) => n + entrySize(e), 0);
  const packed = packBatch(entries, size);
  const out: WireEntry[] = [];
  assert.equal(unpackBatch(packed, (e) => out.push(e)), 2);
  assert.deepEqual(
    out.map((e) => [e.key.toString(), e.sequence, e.uuid.length, e.properties.toString(), e.body.length]),
    [['a', 1, 16, 'enc=msgpack\n', 1], ['bb', 2 ** 40, 0, '', 70_000]],
  );
  assert.throws(() => unpackBatch(packed.subarray(0, packed.length - 1), () => {}), BatchError);
  assert.throws(() => unpackBatch(packed.subarray(0, 5), () => {}), BatchError);
});

test('digest is order independent and sensitive to loss and to sequences', () => {
  const d1 = new SnapshotDigest();
  const d2 = new SnapshotDigest();
  const pairs: Array<[string, number]> = Array.from({ length: 100 }, (_, i) => [`k${i}`, i + 1]);
  for (const [k, s] of pairs) d1.add(b(k), s);
  for (const [k, s] of [...pairs].reverse()) d2.add(b(k), s);
  assert.equal(d1.hex, d2.hex);
  assert.equal(d1.count, 100);
  const d3 = new SnapshotDigest();
  for (const [k, s] of pairs.slice(1)) d3.add(b(k), s);
  assert.notEqual(d3.hex, d1.hex);
  const d4 = new SnapshotDigest();
  for (const [k, s] of pairs) d4.add(b(k), s === 50 ? 51 : s);
  assert.notEqual(d4.hex, d1.hex);
});

test('gap properties: prev by prefix length, heads by prefix', () => {
  const prev = addPrevious(addPrevious(addPrevious('', 0, 41), 4, 7), 10, 0);
  assert.equal(prev, '0:41,4:7,10:0');
  assert.equal(previousFor(prev, 0), 41);
  assert.equal(previousFor(prev, 4), 7);
  assert.equal(previousFor(prev, 10), 0);
  assert.equal(previousFor(prev, 1), undefined);
  assert.equal(previousFor('4:x', 4), undefined);
  const [heads = ''] = encodeHeads([[headId(''), 9], [headId('app/'), 3], [headId('\u0000bin'), 2]]);
  assert.ok(!heads.includes('=') && !heads.includes('\n'));
  assert.equal(headFor(heads, b('')), 9);
  assert.equal(headFor(heads, b('app/')), 3);
  assert.equal(headFor(heads, Buffer.from('\u0000bin', 'latin1')), 2);
  assert.equal(headFor(heads, b('other/')), undefined);
});
