/**
 * Ed25519 identities: a writer's key pair, its secret key file, and the short printed form of
 * its public key.
 *
 * Key file (JSON, mode 0600):
 * ```json
 * {"type":"clonekv-ed25519","secretKey":"<base64 of tweetnacl's 64-byte secretKey>","publicKey":"ed25519:<base64url>"}
 * ```
 * `secretKey` is exactly what `nacl.sign.keyPair().secretKey` holds (32-byte seed, then the
 * 32-byte public key); `publicKey` is repeated for people reading the file and is checked.
 *
 * Public key short form: `ed25519:` followed by the 32 bytes in base64url (43 characters).
 * Signing uses Node's built-in Ed25519 (a KeyObject made once per identity), which is standard
 * Ed25519: signatures verify with tweetnacl too.
 *
 * @module
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { chmodSync, openSync, readFileSync, statSync, writeSync, closeSync } from 'node:fs';
import nacl from 'tweetnacl';
import { ClonekvError, ErrorCode } from '../errors.ts';

/** The prefix of a printed public key. */
export const PUBLIC_KEY_PREFIX = 'ed25519:';
const KEY_FILE_TYPE = 'clonekv-ed25519';
/** DER headers that turn raw Ed25519 keys into PKCS#8 / SPKI for Node's crypto (RFC 8410). */
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** A writer's key pair. */
export interface Identity {
  /** The 32-byte public key. */
  readonly publicKey: Uint8Array;
  /** tweetnacl's 64-byte secret key (seed, then public key). */
  readonly secretKey: Uint8Array;
  /** The public key in its short printed form, `ed25519:<base64url>`. */
  readonly id: string;
  /** The public key as it travels in the `signer` property: base64url, 43 characters. */
  readonly signer: string;
  /** Node's private key object, made once (for signing). */
  readonly privateKeyObject: KeyObject;
}

/** Builds an {@link Identity} from tweetnacl's 64-byte secret key; throws if it is not one. */
export function identityFromSecretKey(secretKey: Uint8Array): Identity {
  if (secretKey.length !== nacl.sign.secretKeyLength) throw new Error(`a secret key is ${nacl.sign.secretKeyLength} bytes, this one is ${secretKey.length}`);
  const derived = nacl.sign.keyPair.fromSeed(secretKey.subarray(0, 32));
  if (!Buffer.from(derived.publicKey).equals(Buffer.from(secretKey.subarray(32)))) {
    throw new Error('the secret key is inconsistent (its second half is not the public key of its seed)');
  }
  const publicKey = derived.publicKey;
  const signer = Buffer.from(publicKey).toString('base64url');
  return {
    publicKey,
    secretKey: derived.secretKey,
    id: PUBLIC_KEY_PREFIX + signer,
    signer,
    privateKeyObject: createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secretKey.subarray(0, 32)]), format: 'der', type: 'pkcs8' }),
  };
}

/** A new random identity (tweetnacl's key generation). */
export function generateIdentity(): Identity {
  return identityFromSecretKey(nacl.sign.keyPair().secretKey);
}

/** The key file's text for `identity`. */
export function identityFileText(identity: Identity): string {
  return JSON.stringify({ type: KEY_FILE_TYPE, secretKey: Buffer.from(identity.secretKey).toString('base64'), publicKey: identity.id }) + '\n';
}

/**
 * Writes `identity` to a new file `path` with mode 0600. Never overwrites: an existing file is
 * an error (a key is not thrown away by accident).
 *
 * @throws `CLONEKV_INVALID_OPTION` naming the file when it exists or cannot be written
 */
export function saveIdentity(identity: Identity, path: string): void {
  let fd: number;
  try {
    fd = openSync(path, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ClonekvError(ErrorCode.InvalidOption, `cannot create the key file ${path}: ${code === 'EEXIST' ? 'it exists already (a key is never overwritten; remove it first)' : (err as Error).message}`, { cause: err });
  }
  try {
    // The umask may have narrowed the mode; never widened. Said explicitly all the same.
    chmodSync(path, 0o600);
    writeSync(fd, identityFileText(identity));
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads an identity from its key file. The file must be readable by its owner only (no group
 * or other permission bits), and hold the JSON written by {@link saveIdentity}.
 *
 * @throws `CLONEKV_INVALID_OPTION` with a message naming the file and what is wrong
 */
export function loadIdentity(path: string): Identity {
  const fail = (why: string, cause?: unknown): never => {
    throw new ClonekvError(ErrorCode.InvalidOption, `identity key file ${path}: ${why}`, cause === undefined ? undefined : { cause });
  };
  let text: string;
  try {
    const st = statSync(path);
    if (!st.isFile()) fail('not a regular file');
    if (process.platform !== 'win32' && (st.mode & 0o077) !== 0) {
      fail(`permissions ${(st.mode & 0o777).toString(8).padStart(4, '0')} are too open: a secret key must be readable by its owner only (chmod 600 ${path})`);
    }
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof ClonekvError) throw err;
    return fail((err as Error).message, err);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return fail('not a clonekv key file (expected JSON written by clonekv keygen)', err);
  }
  const o = parsed as { type?: unknown; secretKey?: unknown; publicKey?: unknown };
  if (typeof o !== 'object' || o === null || o.type !== KEY_FILE_TYPE || typeof o.secretKey !== 'string') {
    return fail(`not a clonekv key file (expected {"type":"${KEY_FILE_TYPE}","secretKey":…}, written by clonekv keygen)`);
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(o.secretKey)) return fail('secretKey is not base64');
  let identity: Identity;
  try {
    identity = identityFromSecretKey(Buffer.from(o.secretKey, 'base64'));
  } catch (err) {
    return fail((err as Error).message, err);
  }
  if (o.publicKey !== undefined && o.publicKey !== identity.id) return fail(`publicKey ${String(o.publicKey)} does not match the secret key (${identity.id})`);
  return identity;
}

/**
 * Reads a public key: `ed25519:<base64url>` (as printed by keygen) or the bare base64url /
 * base64 of the 32 bytes. Returns the 32 bytes, or `undefined` if it is not one.
 */
export function parsePublicKey(text: string): Uint8Array | undefined {
  const bare = text.startsWith(PUBLIC_KEY_PREFIX) ? text.slice(PUBLIC_KEY_PREFIX.length) : text;
  if (!/^[A-Za-z0-9_\-+/]{43}=?$/.test(bare)) return undefined;
  const bytes = Buffer.from(bare.replace(/\+/g, '-').replace(/\//g, '_').replace(/=$/, ''), 'base64url');
  return bytes.length === 32 ? new Uint8Array(bytes) : undefined;
}

/** The `signer` property value (base64url) of a 32-byte public key. */
export function signerOf(publicKey: Uint8Array): string {
  return Buffer.from(publicKey).toString('base64url');
}

/** Node's public key object for 32 raw bytes (made once per key by the verifier's cache). */
export function publicKeyObject(publicKey: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
}
