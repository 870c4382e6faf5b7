/**
 * CHP properties: zero or more `name=value` lines. Parsing is lenient where the reference
 * implementation was fragile (a value may contain `=`, the last line may lack its `\n`) and
 * strict where input is plainly wrong (a line without `=`, an empty name, invalid UTF-8).
 *
 * @module
 */

import { isUtf8 } from 'node:buffer';

/** Ordered name → value pairs. */
export type Properties = Map<string, string>;

/** Read access to properties: a parsed {@link Properties} map or a {@link PropertyView}. */
export interface PropertyReader {
  get(name: string): string | undefined;
  has(name: string): boolean;
}

/** Largest properties frame accepted, in bytes. */
export const MAX_PROPERTIES_BYTES = 64 * 1024;

const EMPTY = Buffer.alloc(0);

/** Why a properties frame was refused. */
export class PropertiesError extends Error {}

/**
 * Parses a properties frame into a map (validated by the same rules as {@link PropertyView}).
 * Throws {@link PropertiesError} for a malformed frame.
 */
export function parseProperties(frame: Uint8Array): Properties {
  new PropertyView(frame);
  const props: Properties = new Map();
  const text = Buffer.from(frame.buffer, frame.byteOffset, frame.length).toString('utf8');
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    const eq = line.indexOf('=');
    props.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return props;
}

/**
 * A validated properties frame read in place: `get` scans the frame for the name, so a message
 * whose properties are looked up once or twice costs no map and no string per property. Used on
 * the hot paths (every update a peer applies, every write the forwarder sequences).
 */
export class PropertyView implements PropertyReader {
  readonly #frame: Uint8Array;

  /** Validates `frame` with the same rules as {@link parseProperties}; throws {@link PropertiesError}. */
  constructor(frame: Uint8Array) {
    if (frame.length > MAX_PROPERTIES_BYTES) throw new PropertiesError('properties frame too large');
    let start = 0;
    let sawEquals = false;
    for (let i = 0; i <= frame.length; i++) {
      const c = i < frame.length ? frame[i] : 0x0a;
      if (c === 0x0a) {
        if (i > start && !sawEquals) throw new PropertiesError('property line without "="');
        start = i + 1;
        sawEquals = false;
      } else if (c === 0x3d && !sawEquals) {
        if (i === start) throw new PropertiesError('property with an empty name');
        sawEquals = true;
      }
    }
    if (frame.length > 0 && !isUtf8(frame)) throw new PropertiesError('properties are not valid UTF-8');
    this.#frame = frame;
  }

  get(name: string): string | undefined {
    const f = this.#frame;
    const n = name.length;
    let start = 0;
    while (start < f.length) {
      let end = f.indexOf(0x0a, start);
      if (end < 0) end = f.length;
      if (end - start > n && f[start + n] === 0x3d) {
        let match = true;
        for (let k = 0; k < n; k++) {
          if (f[start + k] !== name.charCodeAt(k)) {
            match = false;
            break;
          }
        }
        if (match) return Buffer.from(f.buffer, f.byteOffset, f.length).toString('utf8', start + n + 1, end);
      }
      start = end + 1;
    }
    return undefined;
  }

  has(name: string): boolean {
    return this.get(name) !== undefined;
  }
}

/** Encodes properties, each line ending in `\n`. Names and values must not contain `\n`; names not `=`. */
export function encodeProperties(props: Iterable<readonly [string, string]> | undefined): Buffer {
  if (props === undefined) return EMPTY;
  let text = '';
  for (const [name, value] of props) {
    if (name.length === 0 || name.includes('=') || name.includes('\n') || value.includes('\n')) {
      throw new PropertiesError(`property ${JSON.stringify(name)} cannot be encoded`);
    }
    text += `${name}=${value}\n`;
  }
  return text.length === 0 ? EMPTY : Buffer.from(text, 'utf8');
}

/** Appends one encoded property line to an already encoded properties frame (which may lack its final `\n`). */
export function appendProperty(frame: Uint8Array, name: string, value: string): Buffer {
  const line = frame.length > 0 && frame[frame.length - 1] !== 0x0a ? `\n${name}=${value}\n` : `${name}=${value}\n`;
  const out = Buffer.allocUnsafe(frame.length + Buffer.byteLength(line));
  out.set(frame, 0);
  out.write(line, frame.length, 'utf8');
  return out;
}
