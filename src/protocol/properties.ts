/**
 * CHP properties: zero or more `name=value` lines. Parsing is lenient where the reference
 * implementation was fragile (a value may contain `=`, the last line may lack its `\n`) and
 * strict where input is plainly wrong (a line without `=`, an empty name, invalid UTF-8).
 *
 * @module
 */

/** Ordered name → value pairs. */
export type Properties = Map<string, string>;

/** Largest properties frame accepted, in bytes. */
export const MAX_PROPERTIES_BYTES = 64 * 1024;

const EMPTY = Buffer.alloc(0);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Why a properties frame was refused. */
export class PropertiesError extends Error {}

/**
 * Parses a properties frame. Throws {@link PropertiesError} for a malformed frame.
 */
export function parseProperties(frame: Uint8Array): Properties {
  const props: Properties = new Map();
  if (frame.length === 0) return props;
  if (frame.length > MAX_PROPERTIES_BYTES) throw new PropertiesError('properties frame too large');
  let text: string;
  try {
    text = utf8.decode(frame);
  } catch {
    throw new PropertiesError('properties are not valid UTF-8');
  }
  let start = 0;
  while (start < text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    if (end > start) {
      const eq = text.indexOf('=', start);
      if (eq < 0 || eq > end) throw new PropertiesError(`property line without "=": ${JSON.stringify(text.slice(start, end))}`);
      if (eq === start) throw new PropertiesError('property with an empty name');
      props.set(text.slice(start, eq), text.slice(eq + 1, end));
    }
    start = end + 1;
  }
  return props;
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
  const line = `${name}=${value}\n`;
  if (frame.length === 0) return Buffer.from(line, 'utf8');
  const needsNewline = frame[frame.length - 1] !== 0x0a;
  return Buffer.concat([frame, Buffer.from(needsNewline ? `\n${line}` : line, 'utf8')]);
}
