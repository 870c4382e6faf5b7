/**
 * A peer's counters at their start.
 *
 * @module
 */
import type { PeerStats } from '../types.ts';

/** Fresh counters of a peer: every one at 0. */
export function emptyPeerStats(): PeerStats {
  return {
    updates: 0,
    snapshots: 0,
    deltaSyncs: 0,
    snapshotRequests: 0,
    resyncs: 0,
    gaps: 0,
    malformed: 0,
    undecodable: 0,
    sealedUnopened: 0,
    snapshotAborted: 0,
    snapshotEntries: 0,
    duplicates: 0,
    writes: 0,
    writeRetries: 0,
    failovers: 0,
    unauthorized: 0,
    sequence: 0,
  };
}
