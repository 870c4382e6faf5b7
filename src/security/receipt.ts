/**
 * Signed receipts: a recipient's signed statement that it applied one exact write.
 *
 * A writer that wants receipts adds the property `confirm` to its (signed) write: the
 * recipients' public keys (base64url, as in `signer`), separated by commas. A recipient named
 * there, once its map holds that write, writes its receipt as an ordinary signed write under
 * {@link receiptKey} (`$receipts/<writer>/<uuid hex>/<recipient>`, with a short ttl), which the
 * writer's peer subscribes to. The receipt's value is `{ seq, digest, sig }`: `sig` is Ed25519,
 * by the recipient, over a payload that starts with its own domain-separation prefix (so a
 * receipt signature is never a write signature, nor the reverse) and then holds, each
 * length-prefixed: the writer's key, the recipient's key, the written key, the write's uuid,
 * its sequence (decimal) and the SHA-256 of its body. A receipt from another identity, or for
 * another write or another version of it, fails that check and never counts.
 *
 * @module
 */
import { createHash, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { Identity } from './identity.ts';

/** Domain separation: the first bytes of every receipt payload (writes use another). */
export const RECEIPT_DOMAIN = 'clonekv receipt v1\u0000';
const DOMAIN = Buffer.from(RECEIPT_DOMAIN, 'latin1');
/** Where receipts are written: `$receipts/<writer>/<uuid hex>/<recipient>`. */
export const RECEIPTS_PREFIX = '$receipts/';
/** How long a receipt stays in the map (seconds): long enough for its writer to read it. */
export const RECEIPT_TTL_SECONDS = 60;
const SIGNER_TEXT = /^[A-Za-z0-9_-]{43}$/;
const SIG_TEXT = /^[A-Za-z0-9_-]{86}$/;

/** The key a receipt is written under. */
export function receiptKey(writer: string, uuid: Uint8Array, recipient: string): string {
  return `${RECEIPTS_PREFIX}${writer}/${Buffer.from(uuid).toString('hex')}/${recipient}`;
}

/** The subtree holding every receipt for `writer`'s writes. */
export function receiptSubtree(writer: string): string {
  return `${RECEIPTS_PREFIX}${writer}/`;
}

/**
 * The recipient a receipt key belongs to (its last part), if the key has a receipt's shape:
 * the policy lets every identity it names write receipts signed as itself, and no other.
 */
export function receiptKeyRecipient(key: Uint8Array): string | undefined {
  const text = Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');
  if (!text.startsWith(RECEIPTS_PREFIX)) return undefined;
  const parts = text.slice(RECEIPTS_PREFIX.length).split('/');
  if (parts.length !== 3 || !SIGNER_TEXT.test(parts[0]!) || !/^[0-9a-f]{32}$/.test(parts[1]!) || !SIGNER_TEXT.test(parts[2]!)) return undefined;
  return parts[2];
}

/** The recipients a write's `confirm` property names (public keys, base64url); bad ones are skipped. */
export function confirmList(prop: string | undefined): string[] {
  if (prop === undefined) return [];
  return prop.split(',').filter((s) => SIGNER_TEXT.test(s));
}

/** What a receipt's value holds. */
export interface ReceiptValue {
  /** The sequence the forwarder gave the write. */
  seq: number;
  /** SHA-256 of the write's body, base64url. */
  digest: string;
  /** The recipient's signature, base64url. */
  sig: string;
}

/** SHA-256 of a body, base64url. */
export function bodyDigest(body: Uint8Array): string {
  return createHash('sha256').update(body).digest('base64url');
}

function payload(writer: string, recipient: string, key: Uint8Array, uuid: Uint8Array, seq: number, digest: string): Buffer {
  const parts: Buffer[] = [DOMAIN];
  for (const field of [Buffer.from(writer, 'latin1'), Buffer.from(recipient, 'latin1'), Buffer.from(key), Buffer.from(uuid), Buffer.from(String(seq), 'latin1'), Buffer.from(digest, 'latin1')]) {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(field.length);
    parts.push(len, field);
  }
  return Buffer.concat(parts);
}

/** A recipient's receipt for the write of `key` (uuid, sequence, body) by `writer`. */
export function signReceipt(identity: Identity, writer: string, key: Uint8Array, uuid: Uint8Array, seq: number, body: Uint8Array): ReceiptValue {
  const digest = bodyDigest(body);
  const sig = cryptoSign(null, payload(writer, identity.signer, key, uuid, seq, digest), identity.privateKeyObject).toString('base64url');
  return { seq, digest, sig };
}

/**
 * Whether `value` is `recipient`'s valid receipt for exactly this write: its sequence, its
 * body's digest, and a signature by `recipientKey` over all of it.
 */
export function verifyReceipt(
  value: unknown,
  recipient: string,
  recipientKey: KeyObject,
  writer: string,
  key: Uint8Array,
  uuid: Uint8Array,
  seq: number,
  digest: string,
): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const r = value as Partial<ReceiptValue>;
  if (r.seq !== seq || r.digest !== digest || typeof r.sig !== 'string' || !SIG_TEXT.test(r.sig)) return false;
  return cryptoVerify(null, payload(writer, recipient, key, uuid, seq, digest), recipientKey, Buffer.from(r.sig, 'base64url'));
}
