/**
 * The one path of every sequenced update: it takes the next sequence, stores the update,
 * advances the subscription heads, and publishes the KVPUB with its gap-detection `prev`. Writes,
 * presence keys, purges and expiries all go through {@link UpdateLog.append}. Heartbeats (HUGZ,
 * with the heads) are built here too, since they describe the same log. No sockets: messages go
 * out through the `send` callback.
 *
 * @module
 */
import { Command, Prop, PROTOCOL_VERSION } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { appendProperty, encodeProperties } from '../protocol/properties.ts';
import { encodeSequence } from '../protocol/sequence.ts';
import { UpdateHistory, type HistoryBounds } from '../store/history.ts';
import { SequencedMap } from '../store/sequenced-map.ts';
import type { Counters } from './counters.ts';
import { SubscriptionHeads } from './heads.ts';

const HUGZ = Buffer.from(Command.Heartbeat);

/** Unsubscribed prefixes whose heads are kept, so a resubscription cannot hide a miss. */
const RETAINED_HEADS = 10_000;

/** What the log needs from the rest of the forwarder. */
export interface UpdateLogHooks {
  /** Hands a message to the publisher. */
  readonly send: (frames: Buffer[]) => void;
  /** Asks for an expiry pass at `at` (ms). */
  readonly onDeadline: (at: number) => void;
  /** Tells who owns `key` after an update (`undefined`: nobody). */
  readonly onOwner: (key: string, owner: string | undefined) => void;
  readonly counters: Counters;
  /** Bounds of the retained history (default: the forwarder's defaults). */
  readonly history?: HistoryBounds;
}

/** The sequenced, published log of updates. */
export class UpdateLog {
  readonly store = new SequencedMap();
  readonly heads = new SubscriptionHeads({ retain: RETAINED_HEADS });
  /** The last updates, for deltas, `watch({ since })` and `history()`. */
  readonly history: UpdateHistory;
  readonly #hooks: UpdateLogHooks;

  constructor(hooks: UpdateLogHooks) {
    this.#hooks = hooks;
    this.history = new UpdateHistory(hooks.history ?? { maxEntries: 1_000_000, maxBytes: 256 * 1024 * 1024 });
  }

  /**
   * Sequences, stores and publishes one update.
   *
   * @param key - the key as a latin1 string of its bytes (`keyBytes`)
   * @param ttlMs - time to live in ms (0 = none)
   * @param owner - the peer that owns the key from now on (`undefined`: nobody)
   * @returns the sequence assigned
   */
  append(keyBytes: Buffer, key: string, uuid: Buffer, props: Buffer, body: Buffer, ttlMs: number, now: number, owner: string | undefined): number {
    const seq = this.store.apply(key, uuid, props, body, ttlMs, now);
    this.history.appendParts(seq, keyBytes, uuid, props, body, body.length > 0 && ttlMs > 0 ? now + ttlMs : 0, owner);
    this.#hooks.counters.events.published++;
    this.#hooks.onOwner(key, owner);
    if (ttlMs > 0) this.#hooks.onDeadline(now + ttlMs);
    const prev = this.heads.advance(key, seq);
    if (prev.length === 0) return seq; // nobody subscribed: XPUB would drop it anyway
    this.#hooks.send([keyBytes, encodeSequence(seq), uuid, appendProperty(props, Prop.Previous, prev), body]);
    return seq;
  }

  /** One heartbeat: as many HUGZ as the `heads` of every subscribed prefix need (see protocol/gaps.ts). */
  heartbeat(epoch: string): void {
    this.#hooks.counters.events.heartbeats++;
    const seq = encodeSequence(this.store.sequence);
    for (const heads of this.heads.headLists()) {
      const props = encodeProperties([
        [Prop.Version, PROTOCOL_VERSION],
        [Prop.Epoch, epoch],
        [Prop.Heads, heads],
      ]);
      this.#hooks.send([HUGZ, seq, EMPTY_FRAME, props, EMPTY_FRAME]);
    }
  }
}
