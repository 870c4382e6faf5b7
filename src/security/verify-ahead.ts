/**
 * Verify ahead, decide in order: signature checks run in parallel on libuv's threadpool
 * (`crypto.verify` with a callback) while the messages that carry them wait in one FIFO; each
 * message is handled, in arrival order, once every check it started has finished.
 *
 * The checks only warm a cache of verdicts. The decision itself is still the synchronous
 * {@link checkWrite} (policy, prefixes, then signature), which asks {@link VerifyAhead.verdict}
 * first and verifies on the spot when no verdict is there. A verdict is keyed by the signature
 * and holds the signer and the exact signed bytes it was computed for, so a forged message
 * that reuses another's signature never borrows its verdict. So correctness never depends on
 * this stage; only speed does, and the order in which messages are handled is the order in
 * which they arrived (whatever order the checks finish in).
 *
 * @module
 */
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { Prop } from '../protocol/commands.ts';
import type { PropertyReader } from '../protocol/properties.ts';
import { signedPayload } from './signature.ts';

const SIG_TEXT = /^[A-Za-z0-9_-]{86}$/;
const TS_TEXT = /^[0-9]{1,16}$/;

interface Verdict {
  readonly signer: string;
  readonly payload: Buffer;
  /** `undefined` while the check runs. */
  ok: boolean | undefined;
}

interface Queued {
  /** Checks this message started that have not finished. */
  pending: number;
  readonly run: () => void;
  /** The signatures whose verdicts it put in the cache (removed once it has run). */
  readonly sigs: string[];
}

/** Adds one signed write (or update) to be checked ahead: key, uuid, body, properties. */
export type AddCheck = (key: Uint8Array, uuid: Uint8Array, body: Uint8Array, props: PropertyReader) => void;

/**
 * Messages waiting at most: past this, {@link VerifyAhead.schedule} returns a promise, and the
 * receive loop reads nothing more until it settles (a flood waits in ZeroMQ's queue, as it did
 * when every check ran on the event loop, instead of growing this one without bound).
 */
export const MAX_WAITING = 2048;

/** The FIFO and the verdict cache (see the module text). */
export class VerifyAhead {
  readonly #keyOf: (signer: string, key: Uint8Array) => KeyObject | undefined;
  readonly #onError: (err: unknown) => void;
  /** Settle the promises {@link schedule} returned when the queue was full (one per receive loop). */
  #unblock: Array<() => void> = [];
  readonly #queue: Queued[] = [];
  #head = 0;
  readonly #cache = new Map<string, Verdict>();
  #closed = false;
  /** Signatures checked on the threadpool (counted when started). */
  checkedAhead = 0;

  /**
   * @param keyOf the key object to check `signer`'s signature on `key` with, or `undefined` when
   *   the policy would refuse the write before any signature check (no check is started then)
   * @param onError a message handler that threw (reported, like a receive loop does, and the
   *   queue goes on)
   */
  constructor(keyOf: (signer: string, key: Uint8Array) => KeyObject | undefined, onError: (err: unknown) => void) {
    this.#keyOf = keyOf;
    this.#onError = onError;
  }

  /** Messages waiting for their checks (or for an earlier message's). */
  get waiting(): number {
    return this.#queue.length - this.#head;
  }

  /**
   * Runs `run` after every message scheduled before it, and after the checks `collect` adds
   * (through its `add` argument) have finished. With nothing ahead and nothing to check, `run`
   * runs at once. Returns a promise when {@link MAX_WAITING} messages wait: read nothing more
   * until it settles (when half of them have been handled).
   */
  schedule(run: () => void, collect?: (add: AddCheck) => void): Promise<void> | undefined {
    if (this.#closed) return undefined;
    if (collect === undefined && this.waiting === 0) {
      // Nothing to check and nothing ahead (every message without a policy): handled at once,
      // with nothing allocated on this hot path.
      try {
        run();
      } catch (err) {
        this.#onError(err);
      }
      return undefined;
    }
    const item: Queued = { pending: 0, run, sigs: [] };
    if (collect !== undefined) {
      try {
        collect((key, uuid, body, props) => this.#start(item, key, uuid, body, props));
      } catch {
        // A message that cannot be read is left to the decision, which counts it (checked there).
      }
    }
    if (item.pending === 0 && this.waiting === 0) {
      this.#run(item);
      return undefined;
    }
    this.#queue.push(item);
    if (this.waiting < MAX_WAITING) return undefined;
    return new Promise<void>((resolve) => void this.#unblock.push(resolve));
  }

  /**
   * The verdict already reached on `sig` by `signer` over exactly `payload`, or `undefined`
   * (then the caller verifies itself).
   */
  verdict(signer: string, sig: string, payload: Buffer): boolean | undefined {
    const v = this.#cache.get(sig);
    if (v === undefined || v.ok === undefined || v.signer !== signer || !v.payload.equals(payload)) return undefined;
    return v.ok;
  }

  /** Drops every waiting message and verdict; checks still running are ignored when they end. */
  close(): void {
    this.#closed = true;
    this.#queue.length = 0;
    this.#head = 0;
    this.#cache.clear();
    this.#release();
  }

  #start(item: Queued, key: Uint8Array, uuid: Uint8Array, body: Uint8Array, props: PropertyReader): void {
    const signer = props.get(Prop.Signer);
    const sig = props.get(Prop.Signature);
    const ts = props.get(Prop.SignedAt);
    if (signer === undefined || sig === undefined || ts === undefined || !SIG_TEXT.test(sig) || !TS_TEXT.test(ts)) return;
    // The same signature already being checked (a retry, a replay): the decision verifies it itself.
    if (this.#cache.has(sig)) return;
    const keyObject = this.#keyOf(signer, key);
    if (keyObject === undefined) return;
    const payload = signedPayload(key, uuid, body, (n) => props.get(n));
    const verdict: Verdict = { signer, payload, ok: undefined };
    try {
      cryptoVerify(null, payload, keyObject, Buffer.from(sig, 'base64url'), (err, ok) => {
        if (this.#closed) return;
        verdict.ok = err === null && ok;
        item.pending--;
        this.#drain();
      });
    } catch {
      return; // not started: the decision verifies it itself
    }
    this.#cache.set(sig, verdict);
    item.sigs.push(sig);
    item.pending++;
    this.checkedAhead++;
  }

  #drain(): void {
    while (this.#head < this.#queue.length && this.#queue[this.#head]!.pending === 0) {
      const item = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined as unknown as Queued;
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue.splice(0, this.#head);
        this.#head = 0;
      }
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      this.#run(item);
      if (this.#closed) return;
    }
    if (this.waiting <= MAX_WAITING / 2) this.#release();
  }

  #release(): void {
    const waiters = this.#unblock;
    this.#unblock = [];
    for (const resolve of waiters) resolve();
  }

  #run(item: Queued): void {
    try {
      item.run();
    } catch (err) {
      this.#onError(err);
    } finally {
      for (const sig of item.sigs) this.#cache.delete(sig);
    }
  }
}
