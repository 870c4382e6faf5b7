/**
 * Sealed subtrees: values under a configured prefix are encrypted end to end with a secret the
 * peers share (tweetnacl's secretbox: XSalsa20-Poly1305). The forwarder stores and serves the
 * ciphertext without being able to read it; peers with the secret see the value, the others a
 * {@link SealedValue}.
 *
 * Body of a sealed value: a random 24-byte nonce, then the box of the msgpack body the value
 * would otherwise have; the update is marked `enc=sealed` instead of `enc=msgpack`. The key,
 * the properties, the size (plus 40 bytes) and the timing stay visible.
 *
 * @module
 */
import nacl from 'tweetnacl';
import { InvalidOptionError } from '../errors.ts';
import { decodeBody } from '../protocol/values.ts';

/** A nonce's length: the first bytes of a sealed body. */
const NONCE_BYTES = nacl.secretbox.nonceLength; // 24
/** A secret's length. */
export const SEALED_SECRET_BYTES = nacl.secretbox.keyLength; // 32

/**
 * What a peer holds for a sealed value it cannot open: it has no secret for the key
 * (`reason` `'no-secret'`), or the body does not open with the secret it has (a wrong secret,
 * or a body altered on the way: `'cannot-open'`, counted in `peer.stats().sealedUnopened`).
 * Never the garbage a failed decryption would give.
 */
export class SealedValue {
  /** The sealed body as received (nonce and box). */
  readonly bytes: Uint8Array;
  readonly reason: 'no-secret' | 'cannot-open';

  constructor(bytes: Uint8Array, reason: 'no-secret' | 'cannot-open') {
    this.bytes = bytes;
    this.reason = reason;
  }

  /** Shown by JSON.stringify (the CLI prints this): never the bytes. */
  toJSON(): { sealed: true; reason: string; bytes: number } {
    return { sealed: true, reason: this.reason, bytes: this.bytes.length };
  }
}

/** One sealed subtree as the `sealed` option gives it. */
export interface SealedSubtree {
  prefix: string;
  /** 32 bytes, or their base64. */
  secret: string | Uint8Array;
}

/** Seals and opens the values of the configured subtrees. */
export class Sealer {
  /** Longest prefix first, so a nested subtree's secret wins. */
  readonly #subtrees: ReadonlyArray<{ prefix: string; secret: Uint8Array }>;

  constructor(subtrees: ReadonlyArray<{ prefix: string; secret: Uint8Array }>) {
    this.#subtrees = [...subtrees].sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The secret for `key`, or `undefined` if it is in no sealed subtree. */
  secretFor(key: string): Uint8Array | undefined {
    return this.#subtrees.find((s) => key.startsWith(s.prefix))?.secret;
  }

  /** Seals a msgpack body with `secret` (a fresh random nonce each time). */
  static seal(body: Uint8Array, secret: Uint8Array): Buffer {
    const nonce = nacl.randomBytes(NONCE_BYTES);
    return Buffer.concat([nonce, nacl.secretbox(body, nonce, secret)]);
  }

  /**
   * The value of a body marked sealed: decoded when it opens with the key's secret and holds
   * one valid msgpack value; a {@link SealedValue} otherwise (`failed` when a secret was there
   * but the body did not open or decode).
   */
  open(key: string, body: Buffer): { value: unknown; failed: boolean } {
    const bytes = new Uint8Array(body.buffer, body.byteOffset, body.length);
    const secret = this.secretFor(key);
    if (secret === undefined) return { value: new SealedValue(bytes, 'no-secret'), failed: false };
    if (body.length < NONCE_BYTES + nacl.secretbox.overheadLength) return { value: new SealedValue(bytes, 'cannot-open'), failed: true };
    const plain = nacl.secretbox.open(bytes.subarray(NONCE_BYTES), bytes.subarray(0, NONCE_BYTES), secret);
    if (plain === null) return { value: new SealedValue(bytes, 'cannot-open'), failed: true };
    try {
      return { value: decodeBody(Buffer.from(plain.buffer, plain.byteOffset, plain.length), true), failed: false };
    } catch {
      return { value: new SealedValue(bytes, 'cannot-open'), failed: true };
    }
  }
}

/** Checks the peer's `sealed` option: a list of `{ prefix, secret }` (secret: 32 bytes or base64). */
export function sealedOption(value: unknown): Sealer | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw new InvalidOptionError('sealed', `expected an array of { prefix, secret }, got ${typeof value}`);
  const seen = new Set<string>();
  const subtrees = value.map((s: unknown, i) => {
    const name = `sealed[${i}]`;
    const e = s as Partial<SealedSubtree> | null;
    if (typeof e !== 'object' || e === null) throw new InvalidOptionError(name, 'expected { prefix, secret }');
    if (typeof e.prefix !== 'string' || e.prefix === '') throw new InvalidOptionError(`${name}.prefix`, 'expected a non-empty string');
    if (seen.has(e.prefix)) throw new InvalidOptionError(`${name}.prefix`, `${JSON.stringify(e.prefix)} is given twice`);
    seen.add(e.prefix);
    return { prefix: e.prefix, secret: secretBytes(`${name}.secret`, e.secret) };
  });
  return new Sealer(subtrees);
}

function secretBytes(name: string, secret: unknown): Uint8Array {
  let bytes: Uint8Array | undefined;
  if (secret instanceof Uint8Array) bytes = new Uint8Array(secret);
  else if (typeof secret === 'string' && /^[A-Za-z0-9+/]+={0,2}$/.test(secret.trim())) bytes = new Uint8Array(Buffer.from(secret.trim(), 'base64'));
  if (bytes?.length !== SEALED_SECRET_BYTES) {
    throw new InvalidOptionError(name, `expected ${SEALED_SECRET_BYTES} bytes, as a Uint8Array or base64 (head -c 32 /dev/urandom | base64)`);
  }
  return bytes;
}
