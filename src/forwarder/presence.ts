/**
 * Presence: which clonekv peers are alive, and which keys each one owns. A peer is alive while
 * its heartbeats (KVBEAT) arrive; after `peerTimeout` ms of silence, or at its KVBYE, it is
 * purged and its owned keys are deleted (reason `purged`). Each registration writes the
 * presence key `$peers/<id>` and its first beat is answered with KVPRESENT (see
 * {@link Command.PeerPresent}). No sockets: {@link PresenceTable} is pure bookkeeping, and
 * {@link Presence} writes through the update log and replies through a callback.
 *
 * @module
 */
import { Command, PRESENCE_PREFIX, Prop, MSGPACK_ENCODING } from '../protocol/commands.ts';
import { EMPTY_FRAME, type ChpMessage } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import { encodeSequence } from '../protocol/sequence.ts';
import { decodeBody, encodeValue } from '../protocol/values.ts';
import type { ForwarderPeer } from '../types.ts';
import type { Counters } from './counters.ts';
import type { UpdateLog } from './update-log.ts';

/** What a peer says about itself in its heartbeat. */
interface PeerInfo {
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
type BeatResult = 'new' | 'confirmed' | 'known';

/** What a presence key recovered from disk tells of its peer's registration. */
export interface Registration {
  readonly name: string;
  readonly subtree: string;
  /** When the registration began (ms since epoch). */
  readonly since: number;
}

/** The name a peer is registered under until its first beat tells the real one. */
const UNKNOWN_NAME = 'unknown';

/** Presence and ownership. Keys are latin1 strings, as in the store. */
class PresenceTable {
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
  provisional(id: string, now: number, known?: Registration): boolean {
    if (this.#members.has(id)) return false;
    const info: PeerInfo = { id, name: known?.name ?? UNKNOWN_NAME, subtree: known?.subtree ?? '', version: 0 };
    this.#members.set(id, { info, lastSeen: now, since: known?.since ?? now, registeredAt: 0, provisional: true, owned: new Set() });
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
  list(): ForwarderPeer[] {
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

  /** Who owns `key`, if anyone. */
  ownerOf(key: string): string | undefined {
    return this.#owners.get(key);
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

  /** Every member is taken as heard from `now`. */
  touchAll(now: number): void {
    for (const m of this.#members.values()) m.lastSeen = now;
  }

  /** Ids of peers silent since before `now - timeout`. */
  expired(now: number, timeout: number): string[] {
    const out: string[] = [];
    for (const [id, m] of this.#members) if (now - m.lastSeen > timeout) out.push(id);
    return out;
  }
}

/** A peer id as beats and ephemeral writes carry it: 1 to 64 lowercase hex digits. */
export function isPeerId(id: string): boolean {
  return /^[0-9a-f]{1,64}$/.test(id);
}

const KVPRESENT = Buffer.from(Command.PeerPresent);
const MSGPACK_PROPS = encodeProperties([[Prop.Encoding, MSGPACK_ENCODING]]);
const PURGED_PROPS = encodeProperties([[Prop.Reason, 'purged']]);

/** What {@link Presence} needs from the rest of the forwarder. */
export interface PresenceHooks {
  readonly log: UpdateLog;
  readonly counters: Counters;
  /** Sends KVPRESENT on the ROUTER to routing id `to` (after any snapshot being served to it). */
  readonly reply: (to: Buffer, frames: Buffer[]) => void;
  /** Silence after which a peer is purged, ms. */
  readonly peerTimeout: number;
}

/** The forwarder's presence: beats, byes, owners of writes, and purges. */
export class Presence {
  #table = new PresenceTable();
  readonly #hooks: PresenceHooks;

  constructor(hooks: PresenceHooks) {
    this.#hooks = hooks;
  }

  /** Live peers, with the number of keys each owns. */
  list(): ForwarderPeer[] {
    return this.#table.list();
  }

  /** Number of live peers. */
  get size(): number {
    return this.#table.size;
  }

  /** Records who owns `key` after an update (the update log calls this). */
  written(key: string, owner: string | undefined): void {
    this.#table.written(key, owner);
  }

  /**
   * A KVBEAT from routing id `from`. The first beat of a registration writes `$peers/<id>`
   * (again, with the real name, for a peer registered by a write) and is answered with
   * KVPRESENT.
   */
  beat(from: Buffer, msg: ChpMessage): void {
    const id = this.#peerId(msg);
    if (id === undefined) return;
    const info: PeerInfo = {
      id,
      name: msg.properties.get(Prop.Name) ?? 'peer',
      subtree: Buffer.from(msg.properties.get(Prop.Subtree) ?? '', 'base64url').toString('utf8'),
      version: Number(msg.properties.get(Prop.Applied) ?? 0) || 0,
    };
    const result = this.#table.beat(info, Date.now());
    if (result === 'known') return;
    const reg = this.#table.registration(id)!;
    const seq = this.#writeKey(info, reg.since);
    const registeredAt = result === 'new' ? seq : reg.sequence;
    if (result === 'new') this.#table.setRegisteredAt(id, seq);
    const props = encodeProperties([
      [Prop.Owner, id],
      [Prop.Since, String(reg.since)],
    ]);
    this.#hooks.reply(from, [KVPRESENT, encodeSequence(registeredAt), EMPTY_FRAME, props, EMPTY_FRAME]);
  }

  /** A KVBYE: the peer leaves, and what it owned goes at once. */
  bye(msg: ChpMessage): void {
    const id = this.#peerId(msg);
    if (id !== undefined) this.#remove(id);
  }

  /** Who owns `key`, if anyone. */
  ownerOf(key: string): string | undefined {
    return this.#table.ownerOf(key);
  }

  /**
   * Makes `owner` the owner of `key` again without writing anything: a durable forwarder's
   * restart, or an update the disk refused being undone. An owner not registered is registered
   * as heard from now, so it is purged (and its keys deleted) unless it beats within
   * `peerTimeout`; one that beats keeps its keys.
   */
  recover(key: string, owner: string | undefined, now = Date.now(), known?: Registration): void {
    if (owner !== undefined) this.#table.provisional(owner, now, known);
    this.#table.written(key, owner);
    // The presence key deleted (the active purged the peer, or it said bye): the peer is gone
    // here too. Its other keys' deletes follow from the active; without this a passive member's
    // table would only ever grow, one member per id any sender beat with.
    if (owner === undefined && key.startsWith(PRESENCE_PREFIX)) this.#table.remove(key.slice(PRESENCE_PREFIX.length));
  }

  /**
   * The registration a recovered presence key `$peers/<owner>` describes, if it is one: a peer
   * that beats again after a restart keeps its `since`, so it is not told it lost its keys.
   */
  static registration(key: string, owner: string, body: Buffer): Registration | undefined {
    if (key !== PRESENCE_PREFIX + owner) return undefined;
    try {
      const v = decodeBody(body, true) as { name?: unknown; subtree?: unknown; since?: unknown };
      const since = typeof v.since === 'string' ? Date.parse(v.since) : NaN;
      if (typeof v.name !== 'string' || typeof v.subtree !== 'string' || !Number.isFinite(since)) return undefined;
      return { name: v.name, subtree: v.subtree, since };
    } catch {
      return undefined;
    }
  }

  /** Registers the owner of a write not heard from yet, under the name `unknown` until it beats. */
  registerOwner(id: string): void {
    const now = Date.now();
    if (!this.#table.provisional(id, now)) return;
    this.#table.setRegisteredAt(id, this.#writeKey({ id, name: UNKNOWN_NAME, subtree: '', version: 0 }, now));
  }

  /** Forgets every peer and owner (a backup about to load its active's full copy). */
  clear(): void {
    this.#table = new PresenceTable();
  }

  /**
   * Every known peer is taken as heard from `now`: a backup that just took over gives the
   * owners it learned from its active `peerTimeout` to beat here, as after a durable restart.
   */
  touchAll(now: number): void {
    this.#table.touchAll(now);
  }

  /** Purges every peer silent for longer than `peerTimeout`. */
  purgeSilent(now: number): void {
    for (const id of this.#table.expired(now, this.#hooks.peerTimeout)) this.#remove(id);
  }

  #peerId(msg: ChpMessage): string | undefined {
    const id = msg.properties.get(Prop.Owner);
    if (id !== undefined && isPeerId(id)) return id;
    this.#hooks.counters.malformed('properties');
    return undefined;
  }

  /** Writes `$peers/<id>`, owned by the peer so that it goes when the peer does; returns its sequence. */
  #writeKey(info: PeerInfo, since: number): number {
    const key = PRESENCE_PREFIX + info.id;
    const body = encodeValue({ id: info.id, name: info.name, subtree: info.subtree, since: new Date(since).toISOString() });
    return this.#hooks.log.append(Buffer.from(key, 'latin1'), key, EMPTY_FRAME, MSGPACK_PROPS, body, 0, Date.now(), info.id);
  }

  /** Forgets a peer and deletes what it owned (its presence key included), reason `purged`. */
  #remove(id: string): void {
    const now = Date.now();
    const { log, counters } = this.#hooks;
    for (const key of this.#table.remove(id)) {
      if (log.store.get(key) === undefined) continue;
      counters.events.purged++;
      log.append(Buffer.from(key, 'latin1'), key, EMPTY_FRAME, PURGED_PROPS, EMPTY_FRAME, 0, now, undefined);
    }
  }
}
