/**
 * Answers KVHISTORY requests from the retained history: the versions of one key (newest first)
 * or the updates after a sequence under a prefix (oldest first, a page at a time). No sockets:
 * the answer is returned as frames.
 *
 * @module
 */
import { entrySize, packBatch, type WireEntry } from '../protocol/batch.ts';
import { Command, Prop } from '../protocol/commands.ts';
import type { ChpMessage } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import { encodeSequence } from '../protocol/sequence.ts';
import type { UpdateHistory } from '../store/history.ts';
import type { SequencedMap } from '../store/sequenced-map.ts';
import type { UpdateRecord } from '../store/update-record.ts';

const KVHISTORY = Buffer.from(Command.History);
/** Most updates in one answer (a `watch({ since })` replay asks page by page). */
export const MAX_HISTORY_PAGE = 10_000;
/** Most bytes of updates packed in one answer; a page stops early past it (never empty). */
const MAX_PAGE_BYTES = 16 * 1024 * 1024;
const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;

/** Reads a decimal property; `undefined` if absent, `null` if not a valid number. */
function decimal(m: ChpMessage, name: string): number | undefined | null {
  const v = m.properties.get(name);
  if (v === undefined) return undefined;
  if (!DECIMAL.test(v)) return null;
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : null;
}

/** The first records whose keys and bodies fit in {@link MAX_PAGE_BYTES} (at least one). */
function withinPageBytes(records: UpdateRecord[]): UpdateRecord[] {
  let bytes = 0;
  for (let i = 0; i < records.length; i++) {
    bytes += records[i]!.key.length + records[i]!.body.length;
    if (bytes >= MAX_PAGE_BYTES) return records.slice(0, i + 1);
  }
  return records;
}

/**
 * The answer to one KVHISTORY request, or `undefined` for a malformed one (not 16-byte uuid,
 * bad `limit` or `since`), which the caller counts and drops.
 */
export function answerHistory(history: UpdateHistory, store: SequencedMap, m: ChpMessage): Buffer[] | undefined {
  const since = decimal(m, Prop.Since);
  const limit = decimal(m, Prop.Limit);
  if (m.uuid.length !== 16 || since === null || limit === null || limit === 0) return undefined;
  const max = Math.min(limit ?? MAX_HISTORY_PAGE, MAX_HISTORY_PAGE);
  const name = m.body.toString('latin1');
  const oldest = history.oldest;
  let records: UpdateRecord[];
  let compacted = false;
  if (since === undefined) {
    records = withinPageBytes(history.forKey(name, max));
    // Held at the forwarder, but none of its versions retained: they were compacted away.
    compacted = records.length === 0 && store.version(name) > 0;
  } else if (since < oldest) {
    records = [];
    compacted = true;
  } else {
    records = [];
    let bytes = 0;
    for (const r of history.since(since, name)) {
      records.push(r);
      bytes += r.key.length + r.body.length;
      if (records.length >= max || bytes >= MAX_PAGE_BYTES) break;
    }
  }
  const wire: WireEntry[] = records.map((r) => ({ key: r.key, sequence: r.seq, uuid: r.uuid, properties: r.properties, body: r.body }));
  const size = wire.reduce((n, e) => n + entrySize(e), 0);
  const props = encodeProperties([
    [Prop.Status, compacted ? 'compacted' : 'ok'],
    [Prop.Oldest, String(oldest)],
    [Prop.Count, String(wire.length)],
  ]);
  return [KVHISTORY, encodeSequence(store.sequence), m.uuid, props, packBatch(wire, size)];
}
