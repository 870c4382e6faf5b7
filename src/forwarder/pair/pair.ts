/**
 * A member of a primary/backup pair (Binary Star, with terms): which of the two is active, and
 * the replication of the active's log to the other.
 *
 * Roles. At start a member waits up to `partnerTimeout` to hear its partner. A partner that is
 * active makes it passive; a partner that is passive or starting makes a configured primary
 * active, unless that partner holds a longer log (higher term, or same term and higher
 * sequence): then the partner, passive, sees a shorter log next to it and becomes active itself,
 * so a primary that restarted empty never wipes its backup's copy. A primary that hears nobody
 * becomes active alone; a backup never becomes active at start. A passive member takes over only when its partner (which it has seen active) has been
 * silent for `partnerTimeout` AND a snapshot request (ICANHAZ?) arrives or is held: peers that
 * can still reach the primary keep a backup cut off from it passive, which is what avoids split
 * brain when only the link between the servers fails. Becoming active takes term = highest known
 * + 1 (kept on disk when durable). Two actives: the higher term stays, and on equal terms the
 * configured primary; the other steps down at once (fencing, {@link UpdateLog.fence}): what it
 * had not published is undone and its writers get no answer; it rejoins as passive.
 *
 * Replication. The passive asks to catch up after its sequence (SYNC, with its epoch and term
 * lineage). The active answers with the updates after it from its retained history when the two
 * logs provably agree (same epoch, {@link followerAgrees}), else with a full copy (entries with
 * owners and absolute expiry, and the write outcomes still within `dedupTtl`), after which the
 * passive asks again. Then updates stream in order, one message per event-loop turn, never
 * waiting for the previous one to be acknowledged; the passive applies each at exactly its
 * sequence (a gap: it asks again), acknowledges what it applied in memory once per turn, then
 * writes it to its disk (when durable) and publishes it, in the same turn. While a backup
 * follows, the active publishes an update (and answers its writer) only once it is on its own
 * disk (durable, sync) and the backup acknowledged it (see {@link Pair.flush} for why that
 * keeps an acknowledged write through the loss of either server). A backup silent for
 * `partnerTimeout` is declared absent, and the active goes on alone.
 *
 * Silence is measured from when this process last ran normally: after a pause (SIGSTOP, a
 * stall), a member gives its partner a full `partnerTimeout` again before concluding anything,
 * so a paused active hears of the new active before it publishes alone.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { SendQueue } from '../../transport/send-queue.ts';
import { receiveLoop, releaseStateSockets, type StateSockets } from '../../transport/sockets.ts';
import type { DurableStore } from '../../store/durable-store.ts';
import type { TimedRecord } from '../../store/record-codec.ts';
import type { UpdateRecord } from '../../store/update-record.ts';
import type { PairStats } from '../../types.ts';
import type { WriteOutcome } from '../dedup.ts';
import type { Presence } from '../presence.ts';
import type { Sequencer } from '../sequencer.ts';
import type { UpdateLog } from '../update-log.ts';
import { extendLineage, followerAgrees, type Lineage } from './lineage.ts';
import { decodeState, encodeState, type AnnouncedRole, type Beat, type CarriedOutcome, type CopyPart, type Replication, type StateMessage, type SyncRequest } from './state-messages.ts';

export type { PairStats } from '../../types.ts';

/** A change worth a log line: `message` starts with what changed (`now active`, `backup absent`...). */
export interface PairEvent {
  readonly kind: 'active' | 'passive' | 'backup-absent' | 'backup-connected';
  readonly term: number;
  readonly message: string;
}

/** What the pair needs from the forwarder. */
export interface PairHooks {
  readonly configured: 'primary' | 'backup';
  readonly partner: string;
  readonly partnerTimeout: number;
  readonly heartbeatInterval: number;
  readonly dedupTtl: number;
  readonly sockets: StateSockets;
  readonly log: UpdateLog;
  readonly sequencer: Sequencer;
  readonly presence: Presence;
  readonly durable: DurableStore | undefined;
  readonly epoch: { get(): string; set(epoch: string): void };
  /** Snapshot requests held while passive (a takeover needs one). */
  readonly held: () => number;
  /** This member became active: expire what is due, give owners time, serve held requests. */
  readonly onActive: () => void;
  readonly emit: (event: PairEvent) => void;
}

/** Most updates per REPL message, and entries per COPY part. */
const CHUNK = 2000;
/** Most write outcomes per COPY part. */
const OUTCOME_CHUNK = 5000;
/** Most messages queued towards the partner. */
const MAX_QUEUED = 200_000;

interface Follow {
  state: 'idle' | 'requested' | 'live';
  requestedAt: number;
  /** The next SYNC asks for a full copy (the disk holds updates this member undid). */
  needFull: boolean;
  copy: { id: string; next: number; records: TimedRecord[]; outcomes: CarriedOutcome[] } | undefined;
  /** When an update last arrived (a live stream that stalls is asked again). */
  lastUpdate: number;
}

interface Replica {
  readonly session: string;
  /** The last sequence sent. */
  cursor: number;
  /** The store's sequence when it attached: acknowledged up to there, it has caught up. */
  readonly attachedAt: number;
  lastHeard: number;
  caughtUp: boolean;
  acked: number;
}

/** One member of a pair. */
export class Pair {
  readonly #h: PairHooks;
  readonly #session = randomBytes(8).toString('hex');
  readonly #send: SendQueue;
  readonly #loop: Promise<void>;
  readonly #timer: NodeJS.Timeout;
  readonly #tickMs: number;
  #role: AnnouncedRole = 'starting';
  #term = 0;
  #lineage: Lineage = [];
  readonly #startedAt = Date.now();
  #resumedAt = 0;
  #lastTick = Date.now();
  #partner: { session: string | undefined; lastHeard: number; beat: Beat | undefined } = { session: undefined, lastHeard: 0, beat: undefined };
  /** This member has seen its partner active (only then may it take over). */
  #heardActive = false;
  #follow: Follow = { state: 'idle', requestedAt: 0, needFull: false, copy: undefined, lastUpdate: 0 };
  #replica: Replica | undefined;
  #out: { records: TimedRecord[]; outcomes: CarriedOutcome[]; scheduled: boolean } = { records: [], outcomes: [], scheduled: false };
  #absentSaid = false;
  /** A follower applied updates not yet acknowledged. */
  #ackDue = false;
  #refused = 0;
  #takeoverCheck: NodeJS.Timeout | undefined;
  readonly #syncs = { delta: 0, full: 0 };
  #closed = false;

  constructor(hooks: PairHooks) {
    this.#h = hooks;
    const saved = hooks.durable?.pairState;
    if (saved) {
      this.#term = saved.term;
      this.#lineage = saved.lineage;
    }
    this.#send = new SendQueue(hooks.sockets.outbox, MAX_QUEUED, () => {}, () => {});
    this.#loop = receiveLoop(hooks.sockets.inbox, (f) => this.#onFrames(f), () => {});
    this.#tickMs = Math.max(10, Math.min(hooks.heartbeatInterval, Math.floor(hooks.partnerTimeout / 4)));
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    this.#beat();
  }

  /** `active` or `passive` (a member still deciding at start serves as a passive one). */
  get role(): 'active' | 'passive' {
    return this.#role === 'active' ? 'active' : 'passive';
  }

  get term(): number {
    return this.#term;
  }

  get lineage(): Lineage {
    return this.#lineage;
  }

  /** Called by the log for each update held locally for good: streamed to a following backup. */
  onLocal(timed: TimedRecord): void {
    const { record } = timed;
    const r = this.#replica;
    if (r === undefined || this.#role !== 'active' || record.seq <= r.cursor) return;
    if (record.seq !== r.cursor + 1) {
      // Cannot happen when every update goes through the log; if it did, the backup starts over.
      this.#dropReplica();
      return;
    }
    r.cursor = record.seq;
    this.#out.records.push(timed);
    this.#scheduleFlush();
  }

  /**
   * The log undid updates the backup was already sent (the disk refused them): the backup is
   * told to start over, and is not waited for meanwhile.
   */
  onReplicaBroken(): void {
    const r = this.#replica;
    if (r === undefined) return;
    this.#replica = undefined;
    this.#out = { records: [], outcomes: [], scheduled: this.#out.scheduled };
    this.#sendTo(r.session, { kind: 'reset' });
  }

  /** A refused or conflicting write outcome: the backup remembers it too. */
  onOutcome(uuid: string, outcome: WriteOutcome): void {
    if (this.#replica === undefined || this.#role !== 'active') return;
    this.#out.outcomes.push([Buffer.from(uuid, 'latin1').toString('hex'), outcome, this.#h.dedupTtl]);
    this.#scheduleFlush();
  }

  /**
   * A snapshot request arrived while this member is not active: takes over if the rule allows
   * it. Returns whether this member is active now (the request is then served at once).
   */
  /**
   * Whether this member is passive while its partner is active and was heard lately (within half
   * of `partnerTimeout`, so well before a takeover could be due): a clonekv peer asking here is
   * then sent on to the partner at once.
   */
  partnerServing(): boolean {
    const b = this.#partner.beat;
    return this.#role === 'passive' && b?.role === 'active' && this.#silentMs(Date.now()) < this.#h.partnerTimeout / 2 && !this.#unawareActive(b);
  }

  requested(): boolean {
    if (this.#role === 'active') return true;
    const now = Date.now();
    this.#maybeTakeOver(now);
    if (this.role === 'active') return true;
    // Held: looked at again the moment the partner's silence reaches partnerTimeout, not at the
    // next tick (a peer's failover waits on it).
    if (this.#heardActive && this.#role === 'passive') {
      clearTimeout(this.#takeoverCheck);
      const wait = Math.max(1, this.#h.partnerTimeout - this.#silentMs(now) + 1);
      this.#takeoverCheck = setTimeout(() => {
        if (!this.#closed) this.#maybeTakeOver(Date.now());
      }, wait);
    }
    return false;
  }

  stats(): PairStats {
    const now = Date.now();
    const log = this.#h.log;
    const silentMs = this.#partner.lastHeard === 0 ? now - this.#startedAt : now - this.#partner.lastHeard;
    const connected = this.#partner.session !== undefined && silentMs < this.#h.partnerTimeout;
    let replication: PairStats['replication'];
    if (this.#role === 'active') {
      const r = this.#replica;
      const acked = r === undefined ? log.publishedSequence : r.acked;
      const oldest = log.oldestUnpublishedAt;
      replication = {
        state: r === undefined ? 'absent' : r.caughtUp ? 'replicating' : 'catching-up',
        sequence: acked,
        lag: Math.max(0, log.store.sequence - acked),
        lagMs: r !== undefined && oldest !== undefined ? now - oldest : 0,
      };
    } else {
      const ahead = this.#partner.beat?.role === 'active' ? this.#partner.beat.sequence : log.store.sequence;
      const lag = Math.max(0, ahead - log.store.sequence);
      replication = {
        state: this.#follow.state === 'live' ? 'following' : 'catching-up',
        sequence: log.store.sequence,
        lag,
        lagMs: lag > 0 && this.#follow.lastUpdate > 0 ? now - this.#follow.lastUpdate : 0,
      };
    }
    return {
      configured: this.#h.configured,
      role: this.role,
      term: this.#term,
      partner: { endpoint: this.#h.partner, connected, silentMs },
      replication,
      refused: this.#refused,
      syncs: { ...this.#syncs },
    };
  }

  /** Stops the timer and closes the state sockets. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#takeoverCheck);
    this.#send.clear();
    await releaseStateSockets(this.#h.sockets);
    await this.#loop;
  }

  // ---- time ---------------------------------------------------------------------------------

  /** How long the partner has been silent, counted from when this process last ran normally. */
  #silentMs(now: number): number {
    return now - Math.max(this.#partner.lastHeard, this.#resumedAt, this.#startedAt);
  }

  #tick(): void {
    if (this.#closed) return;
    const now = Date.now();
    // A tick this late means the process did not run (paused, or starved): nothing heard
    // meanwhile could be read, so silence counts again from now.
    if (now - this.#lastTick > this.#tickMs + this.#h.partnerTimeout / 2) this.#resumedAt = now;
    this.#lastTick = now;
    this.#beat();
    const timeout = this.#h.partnerTimeout;
    if (this.#role === 'starting') {
      if (now - Math.max(this.#startedAt, this.#resumedAt) >= timeout) {
        if (this.#h.configured === 'primary') this.#becomeActive('no partner heard at start');
        else this.#becomePassive('waiting for the primary');
      }
      return;
    }
    if (this.#role === 'passive') {
      this.#maybeTakeOver(now);
      if (this.#role !== 'passive') return;
      const b = this.#partner.beat;
      const partnerActive = b?.role === 'active' && this.#silentMs(now) < timeout && !this.#unawareActive(b);
      const f = this.#follow;
      if (!partnerActive) return;
      if (f.state === 'idle' || (f.state === 'requested' && now - f.requestedAt >= timeout)) this.#requestSync();
      else if (f.state === 'live' && (this.#partner.beat?.sequence ?? 0) > this.#h.log.store.sequence && now - Math.max(f.lastUpdate, this.#resumedAt) >= timeout) {
        // The stream stopped (the active declared this member absent, or a message was lost).
        this.#requestSync();
      }
      return;
    }
    const r = this.#replica;
    if (r !== undefined && now - Math.max(r.lastHeard, this.#resumedAt) >= timeout) this.#declareAbsent();
  }

  /** Read through a method: a role change inside a call is not seen by type narrowing. */
  #isPassive(): boolean {
    return this.#role === 'passive';
  }

  #maybeTakeOver(now: number): void {
    if (this.#role !== 'passive' || !this.#heardActive || this.#h.held() === 0) return;
    if (this.#silentMs(now) < this.#h.partnerTimeout) return;
    this.#becomeActive('the active partner is silent and a peer asked for a snapshot');
  }

  // ---- roles --------------------------------------------------------------------------------

  #becomeActive(why: string): void {
    const known = Math.max(this.#term, this.#partner.beat?.term ?? 0, this.#lineage[this.#lineage.length - 1]?.[0] ?? 0);
    this.#term = known + 1;
    this.#lineage = extendLineage(this.#lineage, this.#term, this.#h.log.store.sequence + 1);
    this.#persist();
    this.#role = 'active';
    this.#follow = { state: 'idle', requestedAt: 0, needFull: false, copy: undefined, lastUpdate: 0 };
    this.#replica = undefined;
    this.#absentSaid = false;
    this.#h.emit({ kind: 'active', term: this.#term, message: `now active (term ${this.#term}, sequence ${this.#h.log.store.sequence}): ${why}` });
    this.#declareAbsent();
    this.#beat();
    this.#h.onActive();
  }

  #becomePassive(why: string): void {
    const wasActive = this.#role === 'active';
    this.#role = 'passive';
    this.#replica = undefined;
    this.#out = { records: [], outcomes: [], scheduled: false };
    const diskAhead = wasActive ? this.#h.log.fence() : false;
    this.#follow = { state: 'idle', requestedAt: 0, needFull: diskAhead, copy: undefined, lastUpdate: 0 };
    this.#h.emit({ kind: 'passive', term: this.#term, message: `now passive (term ${this.#term}): ${why}` });
    this.#beat();
    if (this.#partner.beat?.role === 'active') this.#requestSync();
  }

  /** No backup follows (any more): writes are acknowledged without replication. */
  #declareAbsent(): void {
    if (this.#replica !== undefined) this.#dropReplica();
    if (this.#absentSaid) return;
    this.#absentSaid = true;
    this.#h.emit({ kind: 'backup-absent', term: this.#term, message: 'backup absent: writes are acknowledged without replication' });
  }

  #dropReplica(): void {
    this.#replica = undefined;
    this.#out = { records: [], outcomes: [], scheduled: this.#out.scheduled };
    this.#h.log.detachReplica();
  }

  #persist(): void {
    try {
      this.#h.durable?.savePairState({ term: this.#term, lineage: this.#lineage });
    } catch {
      // Kept in memory; written again with the next change. A disk that refuses this refuses
      // updates too, which the log reports.
    }
  }

  /** The partner's log is longer than this member's: a higher term, or the same term and a higher sequence. */
  #partnerAhead(b: Beat): boolean {
    const mine = this.#h.log.publishedSequence;
    return b.term > this.#term || (b.term === this.#term && b.sequence > mine);
  }

  /** An active partner that never heard this member (another epoch, no newer term) while this member's log is longer. */
  #unawareActive(b: Beat): boolean {
    return b.epoch !== this.#h.epoch.get() && b.term <= this.#term && this.#aheadOf(b);
  }

  /** This member's log is longer than the partner's. */
  #aheadOf(b: Beat): boolean {
    const mine = this.#h.log.publishedSequence;
    return this.#term > b.term || (this.#term === b.term && mine > b.sequence);
  }

  /** The partner outranks this member on equal terms: the configured primary, then the higher session. */
  #partnerOutranks(b: Beat): boolean {
    if (b.configured !== this.#h.configured) return b.configured === 'primary';
    return b.session > this.#session;
  }

  // ---- input --------------------------------------------------------------------------------

  #onFrames(frames: Buffer[]): void {
    // ROUTER: frame 0 is the sender's routing id.
    const m = decodeState(frames.slice(1));
    if (m === undefined) {
      this.#refused++;
      return;
    }
    if (this.#closed) return;
    const now = Date.now();
    if (m.kind === 'beat') return this.#onBeat(m, now);
    // Anything else must come from the partner's current run, meant for this run.
    if (m.session !== this.#partner.session || m.to !== this.#session) {
      this.#refused++;
      return;
    }
    this.#partner.lastHeard = now;
    switch (m.kind) {
      case 'sync':
        return this.#onSync(m);
      case 'copy':
        return this.#onCopy(m);
      case 'repl':
        return this.#onRepl(m, now);
      case 'ack':
        return this.#onAck(m.session, m.applied, now);
      case 'reset':
        // The active undid updates this member already holds: start over (a full copy).
        if (this.#role === 'passive' && this.#follow.state !== 'idle') this.#requestSync();
        return;
    }
  }

  #onBeat(b: Beat, now: number): void {
    const known = this.#partner;
    if (b.session !== known.session) {
      // A new run of the partner (or a stranger): taken only when nobody else is the partner.
      if (known.session !== undefined && now - known.lastHeard < this.#h.partnerTimeout) {
        this.#refused++;
        return;
      }
      if (this.#replica !== undefined) this.#dropReplica();
      if (this.#follow.state !== 'idle') this.#follow = { ...this.#follow, state: 'idle', copy: undefined };
      this.#partner = { session: b.session, lastHeard: now, beat: b };
      // Answered at once, so the new partner learns this member's session without waiting a beat.
      this.#beat();
    }
    this.#partner.lastHeard = now;
    this.#partner.beat = b;
    if (b.role === 'active') this.#heardActive = true;
    if (this.#role === 'starting') {
      if (b.role === 'active') this.#becomePassive(`partner active (term ${b.term})`);
      else if (this.#partnerAhead(b)) this.#becomePassive(`partner ${b.role} with a longer log (term ${b.term}, sequence ${b.sequence})`);
      else if (this.#h.configured === 'primary') this.#becomeActive(`partner ${b.role}`);
      return;
    }
    if (this.#role === 'passive') {
      if (b.role === 'active') {
        // An active that started without hearing this member (another epoch, no newer term)
        // while this one holds a longer log is not followed: it steps down when it hears this.
        if (this.#follow.state === 'idle' && !this.#unawareActive(b)) this.#requestSync();
      } else if (this.#aheadOf(b) || (this.#h.configured === 'primary' && !this.#partnerAhead(b))) {
        // Nobody is active: the member with the longer log takes it (on a tie, the configured
        // primary), so a partner that restarted empty never wipes this one's copy.
        this.#becomeActive(`partner ${b.role} (term ${b.term}, sequence ${b.sequence})`);
      }
      return;
    }
    // Active.
    if (b.role !== 'active' && b.epoch !== this.#h.epoch.get() && b.term >= this.#term && this.#partnerAhead(b)) {
      // The partner never followed this run and holds a longer log: this member started (or
      // went on) without it, and steps down so the longer log is not wiped by a copy of this one.
      this.#becomePassive(`partner ${b.role} holds a longer log (term ${b.term}, sequence ${b.sequence})`);
      return;
    }
    if (b.role === 'active') {
      if (b.term > this.#term || (b.term === this.#term && this.#partnerOutranks(b))) {
        const mine = this.#term;
        // The term never goes back; the lineage comes with the catch-up.
        this.#term = b.term;
        this.#persist();
        this.#becomePassive(`partner active with term ${b.term} (this one had term ${mine})`);
      }
      return;
    }
    if (b.to !== this.#session) return;
    const r = this.#replica;
    if (r !== undefined && r.session === b.session) this.#onAck(b.session, b.applied, now);
    else if (b.role === 'passive' && b.applied > 0) {
      // It believes it follows a stream this member no longer sends (it was declared absent):
      // it must ask again, rather than wait for updates that will not come.
      this.#sendTo(b.session, { kind: 'reset' });
    }
  }

  #onAck(session: string, applied: number, now: number): void {
    const r = this.#replica;
    if (r === undefined || r.session !== session || this.#role !== 'active') return;
    r.lastHeard = now;
    if (applied > r.acked) {
      r.acked = Math.min(applied, r.cursor);
      this.#h.log.replicated(r.acked);
    }
    if (!r.caughtUp && r.acked >= r.attachedAt) {
      r.caughtUp = true;
      this.#absentSaid = false;
      this.#h.emit({ kind: 'backup-connected', term: this.#term, message: `backup connected: replicating from sequence ${r.acked}` });
    }
  }

  // ---- active side --------------------------------------------------------------------------

  #onSync(m: SyncRequest): void {
    if (this.#role !== 'active') return;
    const log = this.#h.log;
    // A follower asking again (a lost message, a restart): the stream starts over. Updates that
    // wait for it keep waiting if it is answered by history (they are in the answer); a full
    // copy takes a while, and they go out meanwhile, as with an absent backup.
    const previous = this.#replica;
    this.#replica = undefined;
    this.#out = { records: [], outcomes: [], scheduled: this.#out.scheduled };
    const published = log.publishedSequence;
    const history = log.history;
    const delta =
      !m.full &&
      m.epoch === this.#h.epoch.get() &&
      m.since <= published &&
      m.since >= history.oldest &&
      history.newest === published &&
      followerAgrees(this.#lineage, this.#term, m.lineage, m.since);
    if (delta) {
      this.#syncs.delta++;
      this.#attach(m.session, m.since);
    } else {
      this.#syncs.full++;
      if (previous !== undefined) log.detachReplica();
      this.#sendCopy(m.session);
    }
  }

  /** Streams the updates after `since` to the follower, then every new one; writes now wait for it. */
  #attach(session: string, since: number): void {
    const log = this.#h.log;
    const now = Date.now();
    const records: TimedRecord[] = [];
    for (const record of log.history.since(since, '')) records.push({ record, at: now });
    for (const t of log.unpublishedAfter(log.publishedSequence)) records.push(t);
    this.#replica = { session, cursor: since + records.length, attachedAt: log.store.sequence, lastHeard: now, caughtUp: false, acked: since };
    log.attachReplica();
    this.#out = { records: [], outcomes: [], scheduled: this.#out.scheduled };
    let first = since + 1;
    let start = true;
    for (let i = 0; i < records.length || start; i += CHUNK) {
      const chunk = records.slice(i, i + CHUNK);
      this.#sendTo(session, { kind: 'repl', start, epoch: this.#h.epoch.get(), term: this.#term, lineage: this.#lineage, first, outcomes: [], records: chunk });
      first += chunk.length;
      start = false;
    }
  }

  /** A full copy of the published state and the write outcomes, in parts. */
  #sendCopy(session: string): void {
    const { log, presence, sequencer } = this.#h;
    const sequence = log.publishedSequence;
    const now = Date.now();
    const entries = log.snapshot('');
    const outcomes: CarriedOutcome[] = [];
    for (const [uuid, outcome, left] of sequencer.outcomes()) {
      if (outcome.status === 'ok' && outcome.seq > sequence) continue;
      outcomes.push([Buffer.from(uuid, 'latin1').toString('hex'), outcome, left]);
    }
    const copy = randomBytes(8).toString('hex');
    const parts = Math.max(1, Math.ceil(entries.length / CHUNK), Math.ceil(outcomes.length / OUTCOME_CHUNK));
    for (let part = 0; part < parts; part++) {
      const records: TimedRecord[] = [];
      for (const [key, e] of entries.slice(part * CHUNK, (part + 1) * CHUNK)) {
        const owner = presence.ownerOf(key);
        const record: UpdateRecord = { seq: e.seq, key, uuid: e.uuid, properties: e.properties, body: e.body, expiresAt: e.expiresAt, ...(owner === undefined ? {} : { owner }) };
        records.push({ record, at: now });
      }
      this.#sendTo(session, {
        kind: 'copy',
        copy,
        part,
        done: part === parts - 1,
        epoch: this.#h.epoch.get(),
        term: this.#term,
        lineage: this.#lineage,
        sequence,
        outcomes: outcomes.slice(part * OUTCOME_CHUNK, (part + 1) * OUTCOME_CHUNK),
        records,
      });
    }
  }

  #scheduleFlush(): void {
    if (this.#out.scheduled) return;
    this.#out.scheduled = true;
    // Everything of this turn in one message (the log's group commit works the same way).
    setImmediate(() => {
      this.#out.scheduled = false;
      this.flush();
    });
  }

  /**
   * The log is about to commit: what collected for the backup goes now (both disks then write
   * at once), and a backup acknowledges what it applied now (not after its own disk write).
   */
  flush(): void {
    if (this.#out.records.length > 0 || this.#out.outcomes.length > 0) this.#flush();
    if (this.#ackDue) this.#sendAck();
  }

  #flush(): void {
    const r = this.#replica;
    const { records, outcomes } = this.#out;
    this.#out = { records: [], outcomes: [], scheduled: this.#out.scheduled };
    if (r === undefined || this.#role !== 'active' || (records.length === 0 && outcomes.length === 0)) return;
    for (let i = 0; i < records.length || (i === 0 && outcomes.length > 0); i += CHUNK) {
      const chunk = records.slice(i, i + CHUNK);
      const first = chunk[0]?.record.seq ?? r.cursor + 1;
      this.#sendTo(r.session, { kind: 'repl', start: false, epoch: this.#h.epoch.get(), term: this.#term, lineage: this.#lineage, first, outcomes: i === 0 ? outcomes : [], records: chunk });
    }
  }

  // ---- passive side -------------------------------------------------------------------------

  #requestSync(): void {
    const p = this.#partner;
    if (p.session === undefined) return;
    const f = this.#follow;
    f.state = 'requested';
    f.requestedAt = Date.now();
    f.copy = undefined;
    this.#sendTo(p.session, { kind: 'sync', since: this.#h.log.store.sequence, epoch: this.#h.epoch.get(), lineage: this.#lineage, full: f.needFull });
  }

  #onCopy(m: CopyPart): void {
    const f = this.#follow;
    if (this.#role !== 'passive' || f.state !== 'requested') return;
    if (m.part === 0) f.copy = { id: m.copy, next: 0, records: [], outcomes: [] };
    const c = f.copy;
    if (c === undefined || c.id !== m.copy || c.next !== m.part) {
      // A part went missing: ask again.
      this.#requestSync();
      return;
    }
    c.next++;
    // A long copy is progress, not silence: it is not asked for again while its parts arrive.
    f.requestedAt = Date.now();
    for (const r of m.records) c.records.push(r);
    for (const o of m.outcomes) c.outcomes.push(o);
    if (!m.done) return;
    f.copy = undefined;
    const { log, sequencer, presence, dedupTtl } = this.#h;
    const now = Date.now();
    const refusals: Array<readonly [string, number, Exclude<WriteOutcome, { status: 'ok' }>]> = [];
    for (const [hex, outcome, left] of c.outcomes) if (outcome.status !== 'ok') refusals.push([Buffer.from(hex, 'hex').toString('latin1'), now - (dedupTtl - left), outcome]);
    try {
      log.replaceAll(c.records, m.sequence, refusals, () => presence.clear());
    } catch {
      // The disk refused it: nothing changed; asked again at the next tick.
      f.state = 'idle';
      return;
    }
    sequencer.clearOutcomes();
    for (const [hex, outcome, left] of c.outcomes) sequencer.remember(Buffer.from(hex, 'hex').toString('latin1'), outcome, dedupTtl - left);
    this.#h.epoch.set(m.epoch);
    this.#adoptTerm(m.term, m.lineage);
    f.needFull = false;
    f.lastUpdate = now;
    this.#requestSync();
  }

  #onRepl(m: Replication, now: number): void {
    const f = this.#follow;
    if (this.#role !== 'passive') return;
    if (m.start) {
      if (f.state !== 'requested' || m.epoch !== this.#h.epoch.get()) return;
      f.state = 'live';
      this.#adoptTerm(m.term, m.lineage);
    } else if (f.state !== 'live') {
      return;
    } else if (m.term !== this.#term) {
      this.#adoptTerm(m.term, m.lineage);
    }
    const { log, sequencer, dedupTtl } = this.#h;
    f.lastUpdate = now;
    for (const t of m.records) {
      const { record, at } = t;
      if (record.seq <= log.store.sequence) continue;
      if (record.seq !== log.store.sequence + 1) {
        // A gap: something was lost on the way; start over from what is held.
        this.#requestSync();
        return;
      }
      log.applyReplicated(t);
      if (record.uuid.length === 16) sequencer.remember(record.uuid.toString('latin1'), { status: 'ok', seq: record.seq }, Math.max(0, now - at));
    }
    for (const [hex, outcome, left] of m.outcomes) {
      const uuid = Buffer.from(hex, 'hex').toString('latin1');
      sequencer.remember(uuid, outcome, dedupTtl - left);
      if (outcome.status !== 'ok') log.rememberOutcome(uuid, outcome, now);
    }
    this.#scheduleAck();
  }

  #adoptTerm(term: number, lineage: Lineage): void {
    if (term === this.#term && lineage.length === this.#lineage.length) return;
    this.#term = term;
    this.#lineage = lineage;
    this.#persist();
  }

  /**
   * Acknowledges what is applied in memory, once per event-loop turn (every REPL message of the
   * turn applied), and before this member's own disk write: the log commits at the end of the
   * turn, synchronously, and sends the acknowledgement first ({@link flush}), so that write
   * overlaps the active's instead of adding to the round trip. This keeps the guarantee that an
   * acknowledged write survives the loss of either server: the active publishes it only once it
   * is on its own disk too (durable, sync) and held here; losing the active leaves it here
   * (written to this disk in this same turn, before it is published here), and losing this
   * member leaves it on the active's disk. Only both lost within those milliseconds, the
   * active's disk with it, lose it.
   */
  #scheduleAck(): void {
    if (this.#ackDue) return;
    this.#ackDue = true;
    setImmediate(() => this.#sendAck());
  }

  #sendAck(): void {
    if (!this.#ackDue) return;
    this.#ackDue = false;
    const p = this.#partner;
    if (this.#role !== 'passive' || p.session === undefined || this.#follow.state !== 'live') return;
    this.#sendTo(p.session, { kind: 'ack', applied: this.#h.log.store.sequence });
  }

  // ---- output -------------------------------------------------------------------------------

  #beat(): void {
    if (this.#closed) return;
    const log = this.#h.log;
    this.#sendTo(this.#partner.session ?? '', {
      kind: 'beat',
      configured: this.#h.configured,
      role: this.#role,
      term: this.#term,
      epoch: this.#h.epoch.get(),
      sequence: log.publishedSequence,
      applied: this.#role === 'passive' && this.#follow.state === 'live' ? log.publishedSequence : 0,
    });
  }

  #sendTo(to: string, m: DistributiveOmit<StateMessage, 'session' | 'to'>): void {
    if (this.#closed) return;
    this.#send.send(encodeState({ ...m, session: this.#session, to } as StateMessage));
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
