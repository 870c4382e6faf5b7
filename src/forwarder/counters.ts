/**
 * The forwarder's counters: events counted in place by the module that sees them, malformed
 * input by reason, and the typed {@link ForwarderStats} snapshot built from them.
 *
 * @module
 */
import type { ForwarderStats, MalformedCounts } from '../types.ts';

/** Counters that only ever go up (the rest of {@link ForwarderStats} is read live). */
export type EventCounter = 'published' | 'duplicates' | 'conflicts' | 'rejected' | 'expired' | 'purged' | 'snapshots' | 'deltas' | 'dropped' | 'heartbeats' | 'passiveDrops' | 'passiveNotices' | 'unauthorized';

/** What {@link Counters.stats} reads from the other modules. */
export type LiveFigures = Pick<ForwarderStats, 'sequence' | 'keys' | 'peers' | 'subscriptions' | 'epoch' | 'dedupEvictions' | 'historyOldest' | 'historySize'>;

/** The forwarder's counters. */
export class Counters {
  /** Incremented in place: `counters.events.published++`. */
  readonly events: Record<EventCounter, number> = {
    published: 0,
    duplicates: 0,
    conflicts: 0,
    rejected: 0,
    expired: 0,
    purged: 0,
    snapshots: 0,
    deltas: 0,
    dropped: 0,
    heartbeats: 0,
    passiveDrops: 0,
    passiveNotices: 0,
    unauthorized: 0,
  };
  readonly #malformedBy: MalformedCounts = {
    'frame-count': 0,
    'empty-key': 0,
    'key-too-long': 0,
    'sequence-size': 0,
    'sequence-range': 0,
    'uuid-size': 0,
    properties: 0,
    'value-too-large': 0,
    'reserved-key': 0,
    'value-encoding': 0,
    owner: 0,
    batch: 0,
    'snapshot-request': 0,
    subscription: 0,
  };
  #malformed = 0;

  /** Counts one malformed message. */
  malformed(reason: keyof MalformedCounts): void {
    this.#malformedBy[reason]++;
    this.#malformed++;
  }

  /** Counts one write refused for `reason` (malformed, and rejected). */
  refused(reason: keyof MalformedCounts): void {
    this.malformed(reason);
    this.events.rejected++;
  }

  /** A copy of every counter, with the live figures. */
  stats(live: LiveFigures): ForwarderStats {
    return { ...this.events, ...live, malformed: this.#malformed, malformedBy: { ...this.#malformedBy } };
  }
}
