/**
 * Write policy: which identities may write which key prefixes. Default deny: a write by an
 * identity the policy does not name, to a key outside its prefixes, or unsigned, is refused.
 *
 * File format (YAML, or JSON, which YAML reads too):
 * ```yaml
 * writers:
 *   - name: deploy                # optional: named in refusals and logs
 *     key: ed25519:Gx3…           # the public key clonekv keygen printed
 *     prefixes: [config/, flags/] # keys it may write; "" = every key
 *   - name: billing               # a recipient of signed receipts that writes nothing else
 *     key: ed25519:Qm9…
 *     prefixes: []
 * ```
 * Every identity named may also write its own signed receipts,
 * `$receipts/<writer>/<uuid>/<its own key>` (security/receipt.ts), and no other identity's.
 *
 * @module
 */
import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ClonekvError, ErrorCode } from '../errors.ts';
import { parsePublicKey, publicKeyObject, PUBLIC_KEY_PREFIX, signerOf } from './identity.ts';
import { receiptKeyRecipient } from './receipt.ts';

/** One identity the policy names. */
export interface Writer {
  /** Its name in the policy, if given. */
  readonly name: string | undefined;
  /** The public key, `ed25519:<base64url>`. */
  readonly id: string;
  /** How refusals and logs name it: `name (ed25519:…)` or the key. */
  readonly label: string;
  /** The key prefixes it may write (`''` = every key), as given. */
  readonly prefixes: readonly string[];
  /** Node's public key object, made once here (verification reuses it). */
  readonly keyObject: KeyObject;
  /** Whether it may write `key` (bytes, compared byte for byte with its prefixes). */
  mayWrite(key: Uint8Array): boolean;
}

const WRITER_FIELDS = new Set(['name', 'key', 'prefixes']);

/** A parsed, checked policy. Immutable: a reload builds a new one. */
export class Policy {
  readonly #writers: ReadonlyMap<string, Writer>;
  /** Where it came from (a file path, or a description). */
  readonly source: string;
  /** The file it was read from ({@link Policy.load}), which a reload reads again. */
  readonly file: string | undefined;

  private constructor(writers: Map<string, Writer>, source: string, file?: string) {
    this.#writers = writers;
    this.source = source;
    this.file = file;
  }

  /** The writer whose `signer` property (base64url public key) this is, if the policy names it. */
  writer(signer: string): Writer | undefined {
    return this.#writers.get(signer);
  }

  /** The identity named `name` in the policy, if any (how `confirmBy` names recipients). */
  named(name: string): Writer | undefined {
    for (const w of this.#writers.values()) if (w.name === name) return w;
    return undefined;
  }

  /** Every writer named. */
  get writers(): Writer[] {
    return [...this.#writers.values()];
  }

  /**
   * Builds a policy from its document (the parsed YAML/JSON).
   *
   * @throws `CLONEKV_INVALID_OPTION` naming `source` and the entry at fault
   */
  static fromDocument(doc: unknown, source = 'policy', file?: string): Policy {
    const fail = (why: string): never => {
      throw new ClonekvError(ErrorCode.InvalidOption, `policy ${source}: ${why}`);
    };
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return fail('expected a mapping with a "writers" list');
    for (const k of Object.keys(doc)) if (k !== 'writers') fail(`unknown field "${k}" (expected only "writers")`);
    const list = (doc as { writers?: unknown }).writers;
    if (!Array.isArray(list)) return fail('"writers" must be a list (an empty list refuses every write)');
    const writers = new Map<string, Writer>();
    list.forEach((entry: unknown, i) => {
      const at = `writers[${i}]`;
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) fail(`${at} must be a mapping with "key" and "prefixes"`);
      const e = entry as Record<string, unknown>;
      for (const k of Object.keys(e)) if (!WRITER_FIELDS.has(k)) fail(`${at}: unknown field "${k}" (expected name, key, prefixes)`);
      if (e.name !== undefined && (typeof e.name !== 'string' || e.name.length === 0 || /[\n=]/.test(e.name))) fail(`${at}: "name" must be a non-empty string without "=" or newlines`);
      const bytes = typeof e.key === 'string' ? parsePublicKey(e.key) : undefined;
      if (bytes === undefined) return fail(`${at}: "key" must be a public key as clonekv keygen prints it (${PUBLIC_KEY_PREFIX}<43 base64url characters>), got ${JSON.stringify(e.key)}`);
      if (!Array.isArray(e.prefixes) || e.prefixes.some((p) => typeof p !== 'string')) fail(`${at}: "prefixes" must be a list of strings ("" = every key)`);
      const prefixes = e.prefixes as string[];
      const signer = signerOf(bytes);
      if (e.name !== undefined && [...writers.values()].some((w) => w.name === e.name)) fail(`${at}: name ${JSON.stringify(e.name)} is given twice`);
      if (writers.has(signer)) fail(`${at}: key ${PUBLIC_KEY_PREFIX}${signer} is named twice (list all its prefixes in one entry)`);
      const id = PUBLIC_KEY_PREFIX + signer;
      const name = e.name as string | undefined;
      const prefixBytes = prefixes.map((p) => Buffer.from(p, 'utf8'));
      writers.set(signer, {
        name,
        id,
        label: name === undefined ? id : `${name} (${id})`,
        prefixes,
        keyObject: publicKeyObject(bytes),
        mayWrite: (key) =>
          prefixBytes.some((p) => key.length >= p.length && Buffer.compare(p, key.subarray(0, p.length)) === 0) || receiptKeyRecipient(key) === signer,
      });
    });
    return new Policy(writers, source, file);
  }

  /** Parses policy text (YAML or JSON). @throws `CLONEKV_INVALID_OPTION` naming `source` */
  static parse(text: string, source = 'policy', file?: string): Policy {
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (err) {
      throw new ClonekvError(ErrorCode.InvalidOption, `policy ${source}: not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`, { cause: err });
    }
    return Policy.fromDocument(doc, source, file);
  }

  /** Reads a policy file. @throws `CLONEKV_INVALID_OPTION` naming the file and what is wrong */
  static load(path: string): Policy {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw new ClonekvError(ErrorCode.InvalidOption, `policy ${path}: cannot be read: ${(err as Error).message}`, { cause: err });
    }
    return Policy.parse(text, path, path);
  }
}

/** A `policy` option: a file path or a {@link Policy}. @throws `CLONEKV_INVALID_OPTION` */
export function policyOption(value: unknown): Policy | undefined {
  if (value === undefined) return undefined;
  if (value instanceof Policy) return value;
  if (typeof value === 'string' && value.length > 0) return Policy.load(value);
  throw new ClonekvError(ErrorCode.InvalidOption, 'invalid option "policy": expected a policy file path or a Policy');
}
