/**
 * The snapshot server: answers ICANHAZ? with the entries under the requested subtree (one
 * message each for plain CHP clients, packed KVBATCHes for clonekv peers) and a KTHXBAI that
 * carries what the peer needs to check completeness (count, digest, epoch).
 *
 * A clonekv peer's request is answered only once its join subscription has reached the
 * publisher (or after `joinWait`): a snapshot taken before its subscription is live would miss
 * the updates in between (reference failure 3). No sockets: replies go through a
 * {@link SnapshotOutbox}, which streams them lazily.
 *
 * @module
 */
import { contiguousEntrySize, packContiguous } from '../protocol/batch.ts';
import { Command, PEER_ID_PREFIX, Prop, PROTOCOL_VERSION } from '../protocol/commands.ts';
import { SnapshotDigest } from '../protocol/digest.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import { encodeSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import type { SequencedMap } from '../store/sequenced-map.ts';
import type { Counters } from './counters.ts';

const KTHXBAI = Buffer.from(Command.SnapshotEnd);
const KVBATCH = Buffer.from(Command.SnapshotBatch);
/** Most bytes packed in one KVBATCH (besides the `snapshotBatch` entry count). */
const BATCH_BYTES = 256 * 1024;

/** Where snapshot messages go: pulled one by one, so a slow peer holds a cursor, not a copy. */
export interface SnapshotOutbox {
  stream(id: Buffer, next: () => Buffer[] | undefined, done: (ok: boolean) => void): void;
}

/** What the snapshot server needs from the rest of the forwarder. */
export interface SnapshotHooks {
  readonly store: Pick<SequencedMap, 'snapshot' | 'sequence'>;
  readonly outbox: SnapshotOutbox;
  readonly counters: Counters;
  readonly epoch: string;
  /** How long a clonekv peer's request waits for its join subscription, ms (0: never). */
  readonly joinWait: number;
  /** Most entries per KVBATCH. */
  readonly snapshotBatch: number;
}

/** Snapshot requests, and the join subscriptions they wait for. */
export class SnapshotServer {
  readonly #hooks: SnapshotHooks;
  /** Routing ids (latin1) of clonekv peers whose join subscription has arrived. */
  readonly #joined = new Set<string>();
  /** Requests waiting for the requester's join subscription, and replies to send after them. */
  readonly #parked = new Map<string, { subtree: Buffer; timer: NodeJS.Timeout; after: Buffer[][] }>();
  #closed = false;

  constructor(hooks: SnapshotHooks) {
    this.#hooks = hooks;
  }

  /** An ICANHAZ? from routing id `id` for `subtree`. */
  request(id: Buffer, subtree: Buffer): void {
    const idKey = id.toString('latin1');
    const isClonekv = idKey.startsWith(PEER_ID_PREFIX);
    if (!isClonekv || this.#joined.has(idKey) || this.#hooks.joinWait === 0) {
      this.#serve(id, subtree, isClonekv && this.#joined.has(idKey));
      return;
    }
    const old = this.#parked.get(idKey);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => this.#unpark(idKey, false), this.#hooks.joinWait);
    this.#parked.set(idKey, { subtree, timer, after: old?.after ?? [] });
  }

  /**
   * Sends `frames` to routing id `id` after any snapshot being served to it or waiting for its
   * join subscription: never inside a snapshot stream, where a peer would take it for an entry.
   */
  sendAfterSnapshot(id: Buffer, frames: Buffer[]): void {
    const parked = this.#parked.get(id.toString('latin1'));
    if (parked) parked.after.push(frames);
    else this.#sendAfter(id, [frames]);
  }

  /** The join subscription of routing id `idKey` (latin1) arrived (`true`) or went (`false`). */
  joined(idKey: string, subscribed: boolean): void {
    if (!subscribed) {
      this.#joined.delete(idKey);
      return;
    }
    this.#joined.add(idKey);
    this.#unpark(idKey, true);
  }

  /** Serves a parked request (if any), then what waited for it. */
  #unpark(idKey: string, joined: boolean): void {
    const parked = this.#parked.get(idKey);
    if (!parked) return;
    clearTimeout(parked.timer);
    this.#parked.delete(idKey);
    const id = Buffer.from(idKey, 'latin1');
    this.#serve(id, parked.subtree, joined);
    if (parked.after.length > 0) this.#sendAfter(id, parked.after);
  }

  /** Queues messages behind whatever is being streamed to `id` (the outbox streams in order). */
  #sendAfter(id: Buffer, messages: Buffer[][]): void {
    let i = 0;
    this.#hooks.outbox.stream(id, () => messages[i++], () => {});
  }

  /** Drops waiting requests and their timers; serves nothing more. */
  close(): void {
    this.#closed = true;
    for (const p of this.#parked.values()) clearTimeout(p.timer);
    this.#parked.clear();
  }

  #serve(id: Buffer, subtreeBytes: Buffer, joined: boolean): void {
    if (this.#closed) return;
    const { store, counters, epoch, snapshotBatch: batchMax } = this.#hooks;
    counters.events.snapshots++;
    const entries = store.snapshot(subtreeBytes.toString('latin1'));
    const sequence = store.sequence;
    const batched = id.toString('latin1').startsWith(PEER_ID_PREFIX);
    const digest = new SnapshotDigest();
    let i = 0;
    let ended = false;
    const next = (): Buffer[] | undefined => {
      if (i < entries.length) {
        if (!batched) {
          const [key, e] = entries[i++]!;
          const keyBytes = Buffer.from(key, 'latin1');
          digest.add(keyBytes, e.seq);
          return [keyBytes, encodeSequence(e.seq), e.uuid, e.properties, e.body];
        }
        const from = i;
        let bytes = 0;
        while (i < entries.length && i - from < batchMax && bytes < BATCH_BYTES) {
          const [key, e] = entries[i++]!;
          digest.add(key, e.seq);
          bytes += contiguousEntrySize(key, e);
        }
        return [KVBATCH, ZERO_SEQUENCE, EMPTY_FRAME, encodeProperties([[Prop.Count, String(i - from)]]), packContiguous(entries, from, i, bytes)];
      }
      if (ended) return undefined;
      ended = true;
      const props = encodeProperties([
        [Prop.Version, PROTOCOL_VERSION],
        [Prop.Epoch, epoch],
        [Prop.Count, String(entries.length)],
        [Prop.Digest, digest.hex],
        [Prop.Joined, joined ? '1' : '0'],
      ]);
      return [KTHXBAI, encodeSequence(sequence), EMPTY_FRAME, props, subtreeBytes];
    };
    this.#hooks.outbox.stream(id, next, () => {});
  }
}
