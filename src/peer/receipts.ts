/**
 * Signed receipts at a peer (README, "Signed receipts"): the recipient's side, which writes a
 * receipt once its map holds a write that names it, and the writer's side, which waits for a
 * valid receipt from every named recipient.
 *
 * @module
 */
import { ClonekvError, ClosedError, ErrorCode, InvalidOptionError, UnconfirmedError } from '../errors.ts';
import { Prop } from '../protocol/commands.ts';
import type { PropertyReader } from '../protocol/properties.ts';
import type { Identity } from '../security/identity.ts';
import type { Policy, Writer } from '../security/policy.ts';
import { bodyDigest, confirmList, receiptKey, RECEIPT_TTL_SECONDS, signReceipt, verifyReceipt, type ReceiptValue } from '../security/receipt.ts';
import type { WatchEntry } from '../types.ts';

/** Most writes awaiting their application at a recipient (oldest dropped first). */
const MAX_PENDING = 1024;
/** Most uuids a recipient remembers having answered (so a resync does not answer again). */
const MAX_ANSWERED = 16_384;
/** A write signed longer ago than this gets no receipt (a snapshot rightly holds old writes). */
const MAX_AGE_MS = 10 * 60_000;
const CONFIRM_RAW = Buffer.from(`${Prop.Confirm}=`, 'latin1');

interface Awaiting {
  readonly seq: number;
  readonly uuid: Buffer;
  readonly keyBytes: Buffer;
  readonly writer: string;
  readonly body: Buffer;
}

/**
 * A recipient's side: {@link observe} sees every update as it arrives (live, snapshot or
 * delta), before it is applied; {@link flush}, after each message, sends a receipt for each
 * observed write naming this identity that the map now holds at exactly its sequence.
 */
export class ReceiptSender {
  readonly #identity: Identity;
  readonly #send: (key: string, value: ReceiptValue) => void;
  /** By key: the latest write naming us, not yet seen applied. */
  readonly #awaiting = new Map<string, Awaiting>();
  readonly #answered = new Set<string>();

  /** @param send - writes a receipt (a signed write with a short ttl) */
  constructor(identity: Identity, send: (key: string, value: ReceiptValue) => void) {
    this.#identity = identity;
    this.#send = send;
  }

  /** Whether raw properties may ask for a receipt (a cheap test before reading them). */
  static mayAsk(rawProps: Buffer): boolean {
    return rawProps.includes(CONFIRM_RAW);
  }

  /** Notes an update that arrived; remembered if it is a fresh write naming this identity. */
  observe(key: Buffer, uuid: Buffer, body: Buffer, props: PropertyReader, seq: number): void {
    const confirm = props.get(Prop.Confirm);
    if (confirm === undefined || body.length === 0 || uuid.length !== 16) return;
    if (!confirmList(confirm).includes(this.#identity.signer)) return;
    const writer = props.get(Prop.Signer);
    const ts = Number(props.get(Prop.SignedAt));
    if (writer === undefined || confirmList(writer).length !== 1 || !(Date.now() - ts < MAX_AGE_MS)) return;
    const id = `${uuid.toString('hex')}/${seq}`;
    if (this.#answered.has(id)) return;
    const k = key.toString('utf8');
    this.#awaiting.delete(k);
    this.#awaiting.set(k, { seq, uuid: Buffer.from(uuid), keyBytes: Buffer.from(key), writer, body: Buffer.from(body) });
    if (this.#awaiting.size > MAX_PENDING) this.#awaiting.delete(this.#awaiting.keys().next().value!);
  }

  /** Sends the receipts now due. `version` is the map's version of a key (undefined: absent). */
  flush(version: (key: string) => number | undefined): void {
    if (this.#awaiting.size === 0) return;
    for (const [k, a] of this.#awaiting) {
      const v = version(k);
      if (v === undefined || v < a.seq) continue; // not applied yet
      this.#awaiting.delete(k);
      if (v !== a.seq) continue; // overtaken by a later write: this one is not what the map holds
      const id = `${a.uuid.toString('hex')}/${a.seq}`;
      this.#answered.add(id);
      if (this.#answered.size > MAX_ANSWERED) this.#answered.delete(this.#answered.values().next().value!);
      this.#send(receiptKey(a.writer, a.uuid, this.#identity.signer), signReceipt(this.#identity, a.writer, a.keyBytes, a.uuid, a.seq, a.body));
    }
  }
}

/** What the writer's side needs of the peer that holds its receipts subtree. */
export interface ReceiptSource {
  ready(): Promise<void>;
  get(key: string): unknown;
  on(event: 'update', listener: (e: WatchEntry) => void): unknown;
  off(event: 'update', listener: (e: WatchEntry) => void): unknown;
  close(): Promise<void>;
  /** Resolves once closed (the writer's peer closes it when it closes). */
  closed(): Promise<void>;
}

/** The recipients `confirmBy` names, found by name in the policy. @throws `CLONEKV_INVALID_OPTION` */
export function recipientsOf(confirmBy: unknown, policy: Policy | undefined, identity: Identity | undefined): Writer[] {
  if (!Array.isArray(confirmBy) || confirmBy.length === 0 || confirmBy.some((n) => typeof n !== 'string')) {
    throw new InvalidOptionError('confirmBy', 'expected a non-empty list of identity names from the policy');
  }
  if (identity === undefined) throw new InvalidOptionError('confirmBy', 'a peer needs an identity to ask for receipts (receipts name the writer)');
  if (policy === undefined) throw new InvalidOptionError('confirmBy', 'a peer needs a policy to ask for receipts (it names the recipients and their keys)');
  return [...new Set(confirmBy as string[])].map((name) => {
    const w = policy.named(name);
    if (w === undefined) throw new InvalidOptionError('confirmBy', `no identity named "${name}" in policy ${policy.source}`);
    return w;
  });
}

/** The `confirm` property's value for these recipients. */
export function confirmProperty(recipients: readonly Writer[]): string {
  return recipients.map((r) => r.id.slice(r.id.indexOf(':') + 1)).join(',');
}

/** One write awaiting its receipts. */
export interface ConfirmedWrite {
  readonly key: string;
  readonly keyBytes: Buffer;
  readonly body: Buffer;
  /** The writer's key (base64url): the receipts subtree is theirs. */
  readonly writer: string;
  readonly recipients: readonly Writer[];
  /** ms for all of it: the acknowledgement and every receipt. */
  readonly timeout: number;
  /** Sends the write (with `remaining` ms for its acknowledgement); `onUuid` learns its uuid. */
  readonly send: (remaining: number, onUuid: (uuid: Buffer) => void) => Promise<number>;
}

/**
 * Sends a write and resolves with its sequence once every recipient's valid receipt is in
 * `source` (the peer holding `$receipts/<writer>/`). `source` is synced before the write goes
 * out, and receipts stay in its map for their ttl, so a fast receipt is never missed.
 *
 * @throws `CLONEKV_UNCONFIRMED` ({@link UnconfirmedError}) naming the recipients that sent no
 *   valid receipt in time; the write's own errors (`CLONEKV_TIMEOUT`…) if it was not sequenced
 */
export async function confirmWrite(source: Promise<ReceiptSource>, w: ConfirmedWrite): Promise<number> {
  const deadline = Date.now() + w.timeout;
  const names = (ids: readonly Writer[]): string[] => ids.map((r) => r.name ?? r.id);
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnconfirmedError(w.key, names(w.recipients), undefined, w.timeout)), w.timeout);
  });
  expired.catch(() => {});
  let inbox: ReceiptSource;
  let listener: ((e: WatchEntry) => void) | undefined;
  try {
    inbox = await Promise.race([source.then(async (s) => (await s.ready(), s)), expired]);
    // The peer closing ends the wait at once (its pending write settles on its own).
    const closed = inbox.closed().then(() => {
      throw new ClosedError('peer');
    });
    closed.catch(() => {});
    let uuid: Buffer | undefined;
    let seq: number | undefined;
    const confirmed = new Set<Writer>();
    const digest = bodyDigest(w.body);
    let done: (() => void) | undefined;
    const check = (r: Writer, value: unknown): void => {
      if (uuid === undefined || seq === undefined || confirmed.has(r)) return;
      const signer = r.id.slice(r.id.indexOf(':') + 1);
      if (verifyReceipt(value, signer, r.keyObject, w.writer, w.keyBytes, uuid, seq, digest)) confirmed.add(r);
      if (confirmed.size === w.recipients.length) done?.();
    };
    const keys = (): Array<[string, Writer]> => w.recipients.map((r) => [receiptKey(w.writer, uuid!, r.id.slice(r.id.indexOf(':') + 1)), r]);
    // Listening starts before the write goes out.
    const early: WatchEntry[] = [];
    listener = (e) => {
      if (e.operation !== 'put') return;
      if (seq === undefined) early.push(e);
      else for (const [k, r] of keys()) if (k === e.key) check(r, e.value);
    };
    inbox.on('update', listener);
    seq = await Promise.race([w.send(Math.max(1, deadline - Date.now()), (u) => (uuid = Buffer.from(u))), expired, closed]);
    if (uuid === undefined) throw new ClonekvError(ErrorCode.Unsupported, `write to "${w.key}" was not signed, so it cannot be confirmed`);
    const all = keys();
    for (const [k, r] of all) check(r, inbox.get(k));
    for (const e of early) for (const [k, r] of all) if (k === e.key) check(r, e.value);
    if (confirmed.size < w.recipients.length) {
      const got = new Promise<void>((resolve) => (done = resolve));
      const v = seq;
      await Promise.race([
        got,
        closed,
        expired.catch(() => {
          throw new UnconfirmedError(w.key, names(w.recipients.filter((r) => !confirmed.has(r))), v, w.timeout);
        }),
      ]);
    }
    return seq;
  } finally {
    clearTimeout(timer);
    if (listener !== undefined) inbox!.off('update', listener);
  }
}

/** How long a recipient's receipt stays in the map, seconds. */
export { RECEIPT_TTL_SECONDS };
