/**
 * CURVE keys as clonekv takes them: z85 text (40 characters for 32 bytes), key files, and
 * allow-lists of client keys. Pure checking and encoding; the sockets themselves are set up in
 * src/transport (the only zeromq importer).
 *
 * Key file (written by `clonekv keygen --curve`): JSON `{ "curve": "z85", "publicKey": "…",
 * "secretKey": "…" }`. Allow-list file: one z85 public key per line (text after the key and a space
 * is a comment); blank lines and lines starting with `# ` are ignored.
 *
 * @module
 */
import { readFileSync } from 'node:fs';
import { InvalidOptionError } from '../errors.ts';

/** A z85 CURVE keypair. */
export interface CurveKeyPair {
  publicKey: string;
  secretKey: string;
}

/** The z85 alphabet (ZeroMQ RFC 32): 85 printable characters, digit value = index. */
const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_VALUE = new Map([...Z85].map((c, i) => [c, i]));

/** Whether `s` is a z85 CURVE key: 40 characters of the z85 alphabet that decode to 32 bytes. */
export function isZ85Key(s: unknown): s is string {
  return typeof s === 'string' && s.length === 40 && [...s].every((c) => Z85_VALUE.has(c)) && z85Decode(s) !== undefined;
}

/** Encodes bytes (a multiple of 4 long) as z85. */
export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new RangeError('z85 encodes a multiple of 4 bytes');
  let out = '';
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  for (let i = 0; i < bytes.length; i += 4) {
    let n = view.getUint32(i);
    const chunk: string[] = [];
    for (let k = 0; k < 5; k++) {
      chunk.push(Z85[n % 85]!);
      n = Math.floor(n / 85);
    }
    out += chunk.reverse().join('');
  }
  return out;
}

/** Decodes z85 text (a multiple of 5 long); `undefined` if it is not valid z85. */
export function z85Decode(s: string): Buffer | undefined {
  if (s.length % 5 !== 0) return undefined;
  const out = Buffer.alloc((s.length / 5) * 4);
  for (let i = 0; i < s.length; i += 5) {
    let n = 0;
    for (let k = 0; k < 5; k++) {
      const v = Z85_VALUE.get(s[i + k]!);
      if (v === undefined) return undefined;
      n = n * 85 + v;
    }
    if (n > 0xffff_ffff) return undefined;
    out.writeUInt32BE(n, (i / 5) * 4);
  }
  return out;
}

function keyOption(name: string, value: unknown): string {
  if (!isZ85Key(value)) throw new InvalidOptionError(name, `expected a CURVE key as 40 z85 characters (clonekv keygen --curve prints one), got ${describe(value)}`);
  return value;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? `a ${value.length}-character string` : typeof value;
}

/** Reads a key file written by `clonekv keygen --curve`; the error names `option` and the file. */
export function readCurveKeyFile(option: string, path: string): CurveKeyPair {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new InvalidOptionError(option, `cannot read the CURVE key file ${path}: ${(err as Error).message}`);
  }
  const p = parsed as Partial<CurveKeyPair> | null;
  if (typeof p !== 'object' || p === null) throw new InvalidOptionError(option, `${path} is not a CURVE key file (expected the JSON written by clonekv keygen --curve)`);
  return { publicKey: keyOption(`${option}.publicKey`, p.publicKey), secretKey: keyOption(`${option}.secretKey`, p.secretKey) };
}

/** The forwarder's `curve` option: a keypair or the path of a key file. */
export function serverCurveOption(value: unknown): CurveKeyPair | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string') return readCurveKeyFile('curve', value);
  if (typeof value !== 'object' || value === null) throw new InvalidOptionError('curve', `expected { publicKey, secretKey } (z85) or a key file path, got ${typeof value}`);
  const v = value as Partial<CurveKeyPair>;
  return { publicKey: keyOption('curve.publicKey', v.publicKey), secretKey: keyOption('curve.secretKey', v.secretKey) };
}

/** A peer's `curve` option, checked: the server's public key and, if given, this peer's keypair. */
export interface ClientCurve {
  serverKey: string;
  publicKey?: string;
  secretKey?: string;
}

/** Checks a peer's `curve` option (a keypair must be given whole or not at all). */
export function clientCurveOption(value: unknown): ClientCurve | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null) throw new InvalidOptionError('curve', `expected { serverKey, publicKey?, secretKey? } (z85), got ${typeof value}`);
  const v = value as Partial<ClientCurve>;
  for (const name of Object.keys(v)) {
    if (name !== 'serverKey' && name !== 'publicKey' && name !== 'secretKey') throw new InvalidOptionError(`curve.${name}`, 'unknown option; known: serverKey, publicKey, secretKey');
  }
  const serverKey = keyOption('curve.serverKey', v.serverKey);
  if ((v.publicKey === undefined) !== (v.secretKey === undefined)) {
    throw new InvalidOptionError(v.publicKey === undefined ? 'curve.publicKey' : 'curve.secretKey', 'publicKey and secretKey go together (give both, or neither for a fresh keypair)');
  }
  if (v.publicKey === undefined) return { serverKey };
  return { serverKey, publicKey: keyOption('curve.publicKey', v.publicKey), secretKey: keyOption('curve.secretKey', v.secretKey) };
}

/** Parses an allow-list file's text: one z85 key per line, `#` starts a comment. */
export function parseAllowList(text: string, source: string): string[] {
  const keys: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    // '#' is a z85 digit, so a key may hold one: a line is a key when its first 40 characters
    // are one (anything after whitespace is a comment); otherwise a line starting with '#' is a
    // comment (no key starts with '#': its group would exceed 32 bits).
    const line = raw.trim();
    const key = line.slice(0, 40);
    if (isZ85Key(key) && (line.length === 40 || /^\s/.test(line.slice(40)))) keys.push(key);
    else if (line !== '' && !line.startsWith('#')) throw new InvalidOptionError('curveAllow', `${source} line ${i + 1} is not a z85 CURVE public key`);
  });
  return keys;
}

/** The forwarder's `curveAllow` option: the allowed client keys, or the path of a file of them. */
export function allowListOption(value: unknown, curve: CurveKeyPair | undefined): ReadonlySet<string> | undefined {
  if (value === undefined) return undefined;
  if (curve === undefined) throw new InvalidOptionError('curveAllow', 'applies only with curve (the allow-list checks CURVE client keys)');
  if (typeof value === 'string') {
    let text: string;
    try {
      text = readFileSync(value, 'utf8');
    } catch (err) {
      throw new InvalidOptionError('curveAllow', `cannot read the allow-list file ${value}: ${(err as Error).message}`);
    }
    return new Set(parseAllowList(text, value));
  }
  if (!Array.isArray(value)) throw new InvalidOptionError('curveAllow', `expected an array of z85 public keys or a file path, got ${typeof value}`);
  return new Set(value.map((k, i) => keyOption(`curveAllow[${i}]`, k)));
}
