/**
 * Only valid values are applied (issue 7, items 1 and 14): a body marked `enc=msgpack` must be
 * exactly one msgpack value of plain types. No sockets: the codec alone.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Packr } from 'msgpackr';
import { ClonekvError } from '../src/errors.ts';
import { decodeBody, encodeValue, isValidValue, MAX_VALUE_DEPTH, ValueDecodeError } from '../src/protocol/values.ts';

const hex = (h: string): Buffer => Buffer.from(h, 'hex');

/** Asserts `body` is refused by both the door check and the decoder, with a message matching `why`. */
function refused(body: Buffer, why: RegExp): void {
  assert.equal(isValidValue(body), false, `isValidValue(${body.toString('hex').slice(0, 40)})`);
  assert.throws(
    () => decodeBody(body, true),
    (err: unknown) => err instanceof ValueDecodeError && err instanceof ClonekvError && err.code === 'CLONEKV_MALFORMED' && why.test(err.message),
  );
}

test('c1 (a byte msgpack never uses) is refused, alone and nested', () => {
  refused(hex('c1'), /c1/);
  refused(hex('92 01 c1'.replace(/ /g, '')), /c1/);
  refused(hex('81a161c1'), /c1/);
});

test('d4 00 00 (msgpackr\'s undefined) and other extension types are refused', () => {
  refused(hex('d40000'), /extension type 0/);
  refused(hex('81a161d40000'), /extension type 0/); // { a: undefined }
  refused(hex('91d40000'), /extension type 0/); // [undefined]
  refused(hex('d47300'), /extension type 115/); // msgpackr's Set
  refused(hex('c70165ff'), /extension type 101/); // msgpackr's Error, ext 8
  refused(hex('d4ff00'), /timestamp of 1 bytes/);
});

test('bytes left over, truncated bodies and lying lengths are refused', () => {
  refused(hex('0102'), /1 bytes left over/);
  refused(hex('92'), /truncated/);
  refused(hex('a3616263ff'), /left over/);
  refused(hex('a56162'), /truncated/);
  refused(hex('dc'), /truncated/);
  refused(hex('ddffffffff01'), /truncated/); // an array "of 4 billion items" in 6 bytes
  refused(hex('dfffffffff'), /truncated/);
  refused(hex('cb0000'), /truncated/);
  refused(hex('c6ffffffff00'), /truncated/);
  refused(Buffer.alloc(0), /empty/);
});

test('nesting deeper than the limit is refused without overflowing the stack', () => {
  for (const depth of [MAX_VALUE_DEPTH + 1, 100_000, 1_000_000]) {
    const body = Buffer.concat([Buffer.alloc(depth, 0x91), hex('01')]);
    refused(body, /nested deeper/);
  }
  // Deep but within the limit: decodes.
  const ok = Buffer.concat([Buffer.alloc(MAX_VALUE_DEPTH, 0x91), hex('01')]);
  let v = decodeBody(ok, true);
  for (let d = 0; d < MAX_VALUE_DEPTH; d++) v = (v as unknown[])[0];
  assert.equal(v, 1);
});

test('valid values round trip, including what msgpackr encodes from other implementations', () => {
  const values: unknown[] = [
    0, -1, 127, -33, 255, 65_536, 2 ** 40, -(2 ** 40), 1.5, Number.NaN, true, false, null,
    '', 'é'.repeat(40), 'x'.repeat(70_000), [], [1, [2, [3]]], {}, { a: { b: [1, 'c', null] } },
    Buffer.from([1, 2, 3]), new Date(0), new Date(1_700_000_000_123),
    Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
  ];
  for (const v of values) {
    const body = encodeValue(v);
    assert.ok(isValidValue(body), `valid: ${JSON.stringify(v)?.slice(0, 40)}`);
    assert.deepEqual(decodeBody(body, true), v);
  }
  // Another encoder's output (64-bit ints, str8/16 lengths, map16): accepted.
  const other = new Packr({ useRecords: false, variableMapSize: true });
  const foreign = other.pack({ big: 2 ** 53 - 1, list: Array.from({ length: 20 }, (_, i) => i), s: 'y'.repeat(300) });
  assert.ok(isValidValue(foreign));
  assert.equal((decodeBody(foreign, true) as { big: number }).big, 2 ** 53 - 1);
  // Unmarked bodies are raw bytes, whatever they hold.
  assert.deepEqual(decodeBody(hex('c1'), false), new Uint8Array([0xc1]));
});

test('encodeValue refuses undefined anywhere in the value (and functions, stored as undefined)', () => {
  assert.throws(() => encodeValue(undefined), TypeError);
  assert.throws(() => encodeValue({ a: undefined }), /undefined/);
  assert.throws(() => encodeValue([1, undefined]), /undefined/);
  assert.throws(() => encodeValue({ f: () => 1 }), /undefined/);
  let deep: unknown = 1;
  for (let d = 0; d <= MAX_VALUE_DEPTH; d++) deep = [deep];
  assert.throws(() => encodeValue(deep), /nested deeper/);
});
