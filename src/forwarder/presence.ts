/**
 * The presence table: which clonekv peers are alive, and which keys each one owns. A peer is
 * alive while its heartbeats arrive; after `timeout` ms of silence it is purged and its owned
 * keys are deleted by the forwarder. No I/O: the forwarder feeds it beats and asks for
 * the peers to purge.
 *
 * @module
 */

/** What a peer says about itself in its heartbeat. */
export interface PeerInfo {
  /** Stable id of the peer (hex), also the `owner` of its ephemeral keys. */
  readonly id: string;
  /** Human name given by the application. */
  readonly name: string;
  /** The subtree it holds. */
  readonly subtree: string;
  /** The last sequence it applied. */
  readonly version: number;
}

interface Member {
  info: PeerInfo;
  lastSeen: number;
  /** When this registration began (ms since epoch). */
  since: number;
  /** Sequence of the presence key written at registration (0 until the caller records it). */
  registeredAt: number;
  /** Registered by an ephemeral write and not yet heard beating: name and subtree unknown. */
  provisional: boolean;
  owned: Set<string>;
}

/**
 * What a beat changed: `new` (not registered before), `confirmed` (registered by an ephemeral
 * write, and this is its first beat), or `known`.
 */
export type BeatResult = 'new' | 'confirmed' | 'known';

/** The name a peer is registered under until its first beat tells the real one. */
export const UNKNOWN_NAME = 'unknown';

/** Presence and ownership. Keys are latin1 strings, as in the store. */
export class PresenceTable {
  readonly #members = new Map<string, Member>();
  readonly #owners = new Map<string, string>();

  /** Records a heartbeat (see {@link BeatResult}). */
  beat(info: PeerInfo, now: number): BeatResult {
    const m = this.#members.get(info.id);
    if (m) {
      m.info = info;
      m.lastSeen = now;
      if (!m.provisional) return 'known';
      m.provisional = false;
      return 'confirmed';
    }
    this.#members.set(info.id, { info, lastSeen: now, since: now, registeredAt: 0, provisional: false, owned: new Set() });
    return 'new';
  }

  /**
   * Registers `id` first seen as the owner of a write, under the name {@link UNKNOWN_NAME} until
   * its first beat. Returns false if it was registered already.
   */
  provisional(id: string, now: number): boolean {
    if (this.#members.has(id)) return false;
    const info: PeerInfo = { id, name: UNKNOWN_NAME, subtree: '', version: 0 };
    this.#members.set(id, { info, lastSeen: now, since: now, registeredAt: 0, provisional: true, owned: new Set() });
    return true;
  }

  /** Records the sequence of the presence key written when `id` was registered. */
  setRegisteredAt(id: string, seq: number): void {
    const m = this.#members.get(id);
    if (m) m.registeredAt = seq;
  }

  /** When and at which sequence `id`'s current registration began. */
  registration(id: string): { since: number; sequence: number } | undefined {
    const m = this.#members.get(id);
    return m && { since: m.since, sequence: m.registeredAt };
  }

  /** Whether `id` is present. */
  has(id: string): boolean {
    return this.#members.has(id);
  }

  /** Live peers. */
  list(): Array<PeerInfo & { since: number; lastSeen: number; owned: number }> {
    return [...this.#members.values()].map((m) => ({ ...m.info, since: m.since, lastSeen: m.lastSeen, owned: m.owned.size }));
  }

  /** Number of live peers. */
  get size(): number {
    return this.#members.size;
  }

  /**
   * Records who owns `key` after a write: `owner` for an ephemeral write, `undefined` for a plain
   * write or a delete (which end any ownership).
   */
  written(key: string, owner: string | undefined): void {
    const previous = this.#owners.get(key);
    if (previous !== undefined && previous !== owner) {
      this.#members.get(previous)?.owned.delete(key);
      this.#owners.delete(key);
    }
    if (owner !== undefined) {
      const m = this.#members.get(owner);
      if (!m) return; // the caller registers the owner first
      m.owned.add(key);
      this.#owners.set(key, owner);
    }
  }

  /** Removes `id`; returns the keys it owned (the caller deletes them). */
  remove(id: string): string[] {
    const m = this.#members.get(id);
    if (!m) return [];
    this.#members.delete(id);
    const keys = [...m.owned];
    for (const k of keys) this.#owners.delete(k);
    return keys;
  }

  /** Ids of peers silent since before `now - timeout`. */
  expired(now: number, timeout: number): string[] {
    const out: string[] = [];
    for (const [id, m] of this.#members) if (now - m.lastSeen > timeout) out.push(id);
    return out;
  }
}
