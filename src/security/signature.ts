/**
 * Signed writes: what a signature covers, signing a write, and checking one.
 *
 * A signature is standard Ed25519 over a payload that starts with a domain-separation prefix
 * (so a clonekv signature can never be taken for a signature of anything else) and then holds,
 * each length-prefixed: the key, the uuid, the body (the value's bytes; empty for a delete),
 * and the properties `enc`, `ttl`, `owner` and `ts` (each with a flag saying whether it is
 * there). It travels in three properties, so plain CHP peers, which ignore unknown
 * properties, are unaffected:
 * - `signer`: the writer's public key, base64url (43 characters);
 * - `sig`: the signature, base64url (86 characters);
 * - `ts`: when it was signed, ms since the Unix epoch (decimal).
 *
 * Verification uses Node's built-in Ed25519 (`crypto.verify`) with a key object made once per
 * public key (see policy.ts): about a hundred times faster here than tweetnacl's pure-JS verify.
 *
 * @module
 */
import { sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { PRESENCE_PREFIX, Prop } from '../protocol/commands.ts';
import type { PropertyReader } from '../protocol/properties.ts';
import type { Identity } from './identity.ts';
import type { Policy } from './policy.ts';

/** Domain separation: the first bytes of every signed payload. */
export const SIGNATURE_DOMAIN = 'clonekv signed write v1\u0000';
const DOMAIN = Buffer.from(SIGNATURE_DOMAIN, 'latin1');
/** The properties a signature covers, in payload order (after key, uuid and body). */
const COVERED = [Prop.Encoding, Prop.Ttl, Prop.Owner, Prop.SignedAt] as const;
const SIG_TEXT = /^[A-Za-z0-9_-]{86}$/;
const TS_TEXT = /^[0-9]{1,16}$/;

/** The bytes a write's signature covers. `get` reads a property of the write. */
export function signedPayload(key: Uint8Array, uuid: Uint8Array, body: Uint8Array, get: (name: string) => string | undefined): Buffer {
  const parts: Buffer[] = [DOMAIN];
  const field = (bytes: Uint8Array): void => {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(bytes.length);
    parts.push(len, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
  };
  field(key);
  field(uuid);
  field(body);
  for (const name of COVERED) {
    const value = get(name);
    parts.push(Buffer.from([value === undefined ? 0 : 1]));
    if (value !== undefined) field(Buffer.from(value, 'utf8'));
  }
  return Buffer.concat(parts);
}

/**
 * Signs a write: appends `ts`, `signer` and `sig` to `props` (which already hold `enc`, `ttl`,
 * `owner` as they will be sent).
 */
export function signWrite(identity: Identity, key: Uint8Array, uuid: Uint8Array, body: Uint8Array, props: Array<[string, string]>, now = Date.now()): void {
  const payload = payloadToSign(key, uuid, body, props, now);
  addSignature(identity, props, cryptoSign(null, payload, identity.privateKeyObject));
}

/**
 * The first half of {@link signWrite}, for signing elsewhere (on the threadpool): appends `ts`
 * to `props` and returns the bytes to sign. {@link addSignature} is the second half.
 */
export function payloadToSign(key: Uint8Array, uuid: Uint8Array, body: Uint8Array, props: Array<[string, string]>, now = Date.now()): Buffer {
  props.push([Prop.SignedAt, String(now)]);
  const get = (name: string): string | undefined => props.find(([n]) => n === name)?.[1];
  return signedPayload(key, uuid, body, get);
}

/** The second half of {@link signWrite}: appends `signer` and `sig` (the signature of {@link payloadToSign}'s bytes). */
export function addSignature(identity: Identity, props: Array<[string, string]>, sig: Buffer): void {
  props.push([Prop.Signer, identity.signer], [Prop.Signature, sig.toString('base64url')]);
}

/**
 * Verdicts reached ahead of the decision (verify-ahead.ts): the verdict on `sig` by `signer`
 * over exactly `payload`, or `undefined` when there is none (then the check verifies itself).
 */
export interface KnownVerdicts {
  verdict(signer: string, sig: string, payload: Buffer): boolean | undefined;
}

/** Why a write is refused: the text says which key and which identity. */
export interface Refusal {
  readonly reason: 'unsigned' | 'not-allowed' | 'bad-signature' | 'stale' | 'future';
  readonly message: string;
}

/** A key as it is named in messages. */
export function showKey(key: Uint8Array): string {
  return JSON.stringify(Buffer.from(key.buffer, key.byteOffset, key.length).toString('utf8'));
}

/**
 * Checks a write against `policy`: signed, by an identity allowed to write that key, with a
 * valid signature. The policy is consulted first, so a signer it does not know costs no
 * signature check. Returns `undefined` when the write passes, else why not.
 */
export function checkWrite(policy: Policy, key: Uint8Array, uuid: Uint8Array, body: Uint8Array, props: PropertyReader, known?: KnownVerdicts): Refusal | undefined {
  const signer = props.get(Prop.Signer);
  if (signer === undefined) return { reason: 'unsigned', message: `unsigned write to ${showKey(key)} refused: the policy allows signed writes only` };
  const writer = policy.writer(signer);
  const who = writer === undefined ? `ed25519:${signer.slice(0, 64)}` : writer.label;
  if (writer === undefined || !writer.mayWrite(key)) return { reason: 'not-allowed', message: `identity ${who} may not write ${showKey(key)}` };
  const sig = props.get(Prop.Signature);
  const ts = props.get(Prop.SignedAt);
  if (sig === undefined || ts === undefined || !SIG_TEXT.test(sig) || !TS_TEXT.test(ts)) {
    return { reason: 'bad-signature', message: `write to ${showKey(key)} by ${who} has a missing or malformed signature` };
  }
  const payload = signedPayload(key, uuid, body, (n) => props.get(n));
  const ok = known?.verdict(signer, sig, payload) ?? cryptoVerify(null, payload, writer.keyObject, Buffer.from(sig, 'base64url'));
  return ok ? undefined : { reason: 'bad-signature', message: `write to ${showKey(key)} by ${who} has a bad signature` };
}

/**
 * The replay bound on a signed write's `ts`: refused when older than `pastMs` or more than
 * `futureMs` ahead of `now`. Returns `undefined` when within, else why not.
 */
export function checkFreshness(key: Uint8Array, props: PropertyReader, now: number, pastMs: number, futureMs: number): Refusal | undefined {
  const ts = Number(props.get(Prop.SignedAt));
  const who = props.get(Prop.Signer) ?? '?';
  if (ts < now - pastMs) {
    return { reason: 'stale', message: `signed write to ${showKey(key)} by ed25519:${who} refused as a replay: signed ${now - ts} ms ago, more than ${pastMs} ms` };
  }
  if (ts > now + futureMs) {
    return { reason: 'future', message: `signed write to ${showKey(key)} by ed25519:${who} refused: signed ${ts - now} ms in the future, more than the ${futureMs} ms allowed for clock skew` };
  }
  return undefined;
}

const PRESENCE = Buffer.from(PRESENCE_PREFIX, 'latin1');

/**
 * A peer's end-to-end check of an update the forwarder published (live, or in a snapshot or a
 * delta): {@link checkWrite}, except for what only the forwarder writes, which no writer
 * signs: its presence subtree (`$peers/`), and deletes it marks `reason=expired` or
 * `reason=purged` that carry no signature. (The README's threat model says what that leaves
 * to a compromised forwarder.) No timestamp bound: a snapshot rightly holds old values.
 */
export function checkUpdate(policy: Policy, key: Uint8Array, uuid: Uint8Array, body: Uint8Array, props: PropertyReader, known?: KnownVerdicts): Refusal | undefined {
  if (key.length >= PRESENCE.length && Buffer.compare(PRESENCE, key.subarray(0, PRESENCE.length)) === 0) return undefined;
  if (body.length === 0 && !props.has(Prop.Signer)) {
    const why = props.get(Prop.Reason);
    if (why === 'expired' || why === 'purged') return undefined;
  }
  return checkWrite(policy, key, uuid, body, props, known);
}
