/**
 * The CLI's CURVE pieces, kept apart from main.ts: `clonekv keygen --curve`, the client flags
 * (`--curve-server-key`, `--curve-key`) and their environment variables.
 *
 * @module
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { InvalidOptionError } from '../errors.ts';
import { isZ85Key, readCurveKeyFile } from '../security/curve.ts';
import { curveKeyPair } from '../transport/sockets.ts';
import type { PeerOptions } from '../types.ts';

/** A usage problem, reported by the caller as its own usage error. */
export class CurveUsageError extends Error {}

/**
 * Creates a z85 CURVE keypair: with `out`, written there (mode 0600, refusing to overwrite) as
 * the JSON key file `serve --curve` and `--curve-key` read. Returns the lines to print: the
 * public key first (what peers need as --curve-server-key, or what goes in an allow-list).
 */
export function keygenCurve(out: string | undefined): string[] {
  const pair = curveKeyPair();
  const text = `${JSON.stringify({ curve: 'z85', publicKey: pair.publicKey, secretKey: pair.secretKey }, null, 2)}\n`;
  if (out === undefined) return [pair.publicKey, text.trimEnd()];
  try {
    writeFileSync(out, text, { mode: 0o600, flag: 'wx' });
    chmodSync(out, 0o600); // the umask cannot widen it, but make sure
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CurveUsageError(code === 'EEXIST' ? `--out ${out} exists: refusing to overwrite a key file` : `cannot write ${out}: ${(err as Error).message}`);
  }
  return [pair.publicKey];
}

/**
 * The peer's `curve` option from --curve-server-key / CLONEKV_CURVE_SERVER_KEY and --curve-key /
 * CLONEKV_CURVE_KEY (a key file from `keygen --curve`; without one a fresh keypair is used,
 * which only a forwarder without an allow-list admits).
 */
export function clientCurveArgs(values: { 'curve-server-key'?: string | undefined; 'curve-key'?: string | undefined }): PeerOptions['curve'] {
  const env = (name: string): string | undefined => (process.env[name] === '' ? undefined : process.env[name]);
  const serverKey = values['curve-server-key'] ?? env('CLONEKV_CURVE_SERVER_KEY');
  const keyFile = values['curve-key'] ?? env('CLONEKV_CURVE_KEY');
  if (serverKey === undefined) {
    if (keyFile !== undefined) throw new CurveUsageError('--curve-key (or CLONEKV_CURVE_KEY) needs --curve-server-key (or CLONEKV_CURVE_SERVER_KEY): the forwarder\'s public key');
    return undefined;
  }
  if (!isZ85Key(serverKey)) throw new CurveUsageError('--curve-server-key (or CLONEKV_CURVE_SERVER_KEY) expects the forwarder\'s public key: 40 z85 characters, as `clonekv keygen --curve` prints');
  if (keyFile === undefined) return { serverKey };
  try {
    return { serverKey, ...readCurveKeyFile('--curve-key', keyFile) };
  } catch (err) {
    throw new CurveUsageError(err instanceof InvalidOptionError ? err.message.replace(/^invalid option "[^"]*": /, '') : String(err));
  }
}

/**
 * The peer's `sealed` option from --sealed / CLONEKV_SEALED: `PREFIX=FILE[,PREFIX=FILE…]`, each
 * FILE holding a 32-byte secret as base64 (or the 32 bytes themselves).
 */
export function sealedArgs(flag: string | undefined): PeerOptions['sealed'] {
  const raw = flag ?? (process.env.CLONEKV_SEALED === '' ? undefined : process.env.CLONEKV_SEALED);
  if (raw === undefined) return undefined;
  const source = flag !== undefined ? '--sealed' : 'CLONEKV_SEALED';
  return raw.split(',').map((item) => {
    const eq = item.lastIndexOf('=');
    if (eq <= 0 || eq === item.length - 1) throw new CurveUsageError(`${source} expects PREFIX=SECRET_FILE (several separated by commas), got ${JSON.stringify(item)}`);
    const file = item.slice(eq + 1);
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new CurveUsageError(`${source}: cannot read the secret file ${file}: ${(err as Error).message}`);
    }
    const secret = bytes.length === 32 ? new Uint8Array(bytes) : bytes.toString('utf8').trim();
    return { prefix: item.slice(0, eq), secret };
  });
}
