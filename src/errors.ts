/**
 * Errors raised by clonekv. Every error is a {@link ClonekvError} with a stable
 * `code` that programs can switch on, and keeps the underlying `cause` (a raw
 * zeromq or msgpackr error is never thrown unwrapped).
 *
 * @module
 */

/** Stable error codes. New codes may be added; existing ones never change meaning. */
export const ErrorCode = {
  /** The resource (peer, forwarder, watch) was closed. */
  Closed: 'CLONEKV_CLOSED',
  /** An option passed to a constructor or method is invalid; the message names it. */
  InvalidOption: 'CLONEKV_INVALID_OPTION',
  /** A key is empty, longer than 255 bytes, or uses a reserved prefix. */
  InvalidKey: 'CLONEKV_INVALID_KEY',
  /** A value cannot be encoded or is larger than the configured limit. */
  InvalidValue: 'CLONEKV_INVALID_VALUE',
  /** A write was not sequenced by the forwarder within its timeout. */
  Timeout: 'CLONEKV_TIMEOUT',
  /** A conditional write lost: the key's current version differs from `ifVersion`. */
  Conflict: 'CLONEKV_CONFLICT',
  /** The forwarder refused a write (for example a value over its size limit). */
  Rejected: 'CLONEKV_REJECTED',
  /** The operation needs a clonekv forwarder but the server is a plain CHP server. */
  Unsupported: 'CLONEKV_UNSUPPORTED',
  /** A socket could not be bound or connected (address in use, bad endpoint). */
  Transport: 'CLONEKV_TRANSPORT',
  /** A watch consumer fell too far behind and its queue overflowed. */
  WatchOverflow: 'CLONEKV_WATCH_OVERFLOW',
  /** A received message is malformed (used in counters and error events). */
  Malformed: 'CLONEKV_MALFORMED',
  /** Retained history asked for is no longer held (compacted away); `oldest` says how far back it goes. */
  Compacted: 'CLONEKV_COMPACTED',
  /**
   * The forwarder's data directory cannot be used: damaged, from a newer version, or a write
   * to it failed (disk full). The message names the file and what to do.
   */
  Storage: 'CLONEKV_STORAGE',
  /**
   * A write refused by the write policy (unsigned, signed by an identity that may not write that
   * key, a bad signature, or a replay); the message names the key and the identity. Also used
   * in counters and error events for updates a peer refused to apply.
   */
  Unauthorized: 'CLONEKV_UNAUTHORIZED',
  /**
   * A write asked for signed receipts (`confirmBy`) and not every named recipient sent a valid
   * one in time; the message and `unconfirmed` name those that did not.
   */
  Unconfirmed: 'CLONEKV_UNCONFIRMED',
} as const;

/** One of the values of {@link ErrorCode}. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base class of every error clonekv throws or emits. */
export class ClonekvError extends Error {
  /** Stable, machine-readable code, e.g. `CLONEKV_TIMEOUT`. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.name = new.target.name;
  }
}

/** Thrown when using a closed peer, forwarder or watch. */
export class ClosedError extends ClonekvError {
  constructor(what: string) {
    super(ErrorCode.Closed, `${what} is closed`);
  }
}

/** Thrown by constructors for a bad option; `option` names it. */
export class InvalidOptionError extends ClonekvError {
  /** The name of the offending option. */
  readonly option: string;

  constructor(option: string, message: string) {
    super(ErrorCode.InvalidOption, `invalid option "${option}": ${message}`);
    this.option = option;
  }
}

/** A write that was not sequenced in time. */
export class TimeoutError extends ClonekvError {
  /** The key of the write. */
  readonly key: string;
  /**
   * Whether the forwarder may have applied the write even so: `true` when it was sent at least
   * once and no answer came (a blind retry may then apply it twice: retry with `ifVersion`, or
   * read the key first); `false` when it never left this peer, so it was not applied.
   */
  readonly maybeApplied: boolean;

  constructor(key: string, ms: number, endpoint: string, maybeApplied = false) {
    super(
      ErrorCode.Timeout,
      `write to "${key}" was not sequenced by the forwarder at ${endpoint} within ${ms} ms; ` +
        (maybeApplied
          ? 'it was sent and may have been applied even so: a blind retry may apply it twice (check the key, or retry with ifVersion); '
          : 'it was never sent, so it was not applied; ') +
        'check that the forwarder is running and reachable, or allow more time (the writeTimeout option; --timeout in the CLI)',
    );
    this.key = key;
    this.maybeApplied = maybeApplied;
  }
}

/** A conditional write that lost to another write. */
export class ConflictError extends ClonekvError {
  /** The key of the write. */
  readonly key: string;
  /** The key's current version at the forwarder (0 = absent). */
  readonly currentVersion: number;
  /** The version the write expected. */
  readonly expectedVersion: number;

  constructor(key: string, expected: number, current: number) {
    super(
      ErrorCode.Conflict,
      `conditional write to "${key}" lost: expected version ${expected}, current version is ${current}` +
        (current === 0 ? ' (absent)' : ''),
    );
    this.key = key;
    this.expectedVersion = expected;
    this.currentVersion = current;
  }
}

/**
 * A request for history that the forwarder no longer holds (`watch({ since })` from before the
 * retained history, or `history(key)` of a key whose versions were all compacted away).
 */
export class CompactedError extends ClonekvError {
  /** Every update after this sequence is still held: ask from here on. */
  readonly oldest: number;

  constructor(what: string, oldest: number, endpoint: string) {
    super(
      ErrorCode.Compacted,
      `${what}: that history was compacted away at the forwarder at ${endpoint}; the oldest sequence it still holds updates after is ${oldest} ` +
        '(raise historyMax/historyBytes there to keep more)',
    );
    this.oldest = oldest;
  }
}

/**
 * The durable forwarder's storage failed: its data directory is damaged or from a newer version
 * (at start), or a write to it failed (for example the disk is full). The message names the
 * directory or file and what to do.
 */
export class StorageError extends ClonekvError {
  /** The data directory (or file) concerned. */
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Storage, message, options);
    this.path = path;
  }
}

/**
 * A write with `confirmBy` that was not confirmed by every named recipient in time. The write
 * itself may well have been applied (`version` says so when it was sequenced).
 */
export class UnconfirmedError extends ClonekvError {
  /** The recipients (names from the policy) that sent no valid receipt. */
  readonly unconfirmed: string[];
  /** The sequence the forwarder gave the write, if it was sequenced. */
  readonly version: number | undefined;

  constructor(key: string, unconfirmed: string[], version: number | undefined, timeout: number) {
    super(
      ErrorCode.Unconfirmed,
      `write to "${key}"${version === undefined ? '' : ` (version ${version})`} not confirmed within ${timeout} ms by: ${unconfirmed.join(', ')}`,
    );
    this.unconfirmed = unconfirmed;
    this.version = version;
  }
}
