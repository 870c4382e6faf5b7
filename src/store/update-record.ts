/**
 * One sequenced update as the forwarder keeps it after publishing: what the retained history
 * holds (for peers that catch up by difference, `watch({ since })` and `history()`), and what a
 * durable forwarder writes to disk and reads back on restart. No I/O here.
 *
 * @module
 */

/** A sequenced update (a put, or a delete when `body` is empty). */
export interface UpdateRecord {
  /** The sequence the forwarder assigned. */
  readonly seq: number;
  /** The key's bytes as a latin1 string (any CHP key round-trips exactly). */
  readonly key: string;
  /** 0 or 16 bytes. */
  readonly uuid: Buffer;
  /** The properties as stored and published (without the per-subscriber `prev`). */
  readonly properties: Buffer;
  /** The value; empty for a delete. */
  readonly body: Buffer;
  /** Absolute expiry time in ms (Date.now clock), 0 for none. */
  readonly expiresAt: number;
  /** The peer id that owns the key from this update on, if any (ephemeral values). */
  readonly owner?: string;
}
