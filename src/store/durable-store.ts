/**
 * The durable forwarder's data directory, kept in LMDB (the `lmdb` package: the only module
 * that imports it). One environment file, `DIR/clonekv.mdb`, holds four databases:
 *
 * - `map`: key (bytes) → its last update, as an encoded {@link UpdateRecord} (owner included:
 *   the owners of ephemeral keys, and so the known peer ids, are recovered from it);
 * - `log`: sequence → update, the retained history, bounded by `historyMax` entries and
 *   `historyBytes` (oldest compacted first);
 * - `outcomes`: uuid → refused or conflicting write outcome and its time (successful outcomes
 *   are rebuilt from the log, which carries each update's uuid and time);
 * - `meta`: format version, epoch, last sequence, first retained sequence, whether the last run
 *   shut down cleanly and in which durability mode.
 *
 * Every group of updates is one LMDB transaction, so the map, the log and the sequence never
 * disagree on disk. LMDB does not checksum data, so every record carries its own CRC-32
 * (record-codec.ts) and the file's header is checked before LMDB maps it: LMDB trusts its file,
 * and a truncated one would crash the process (SIGBUS) instead of failing.
 *
 * @module
 */
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statfsSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { open, type Database, type RootDatabase } from 'lmdb';
import { StorageError } from '../errors.ts';
import type { Durability } from '../types.ts';
import { decodeRecord, encodedOf, encodeRecord, isSound, recordLayout, type TimedRecord } from './record-codec.ts';
import { StoredEntry } from './sequenced-map.ts';
import type { UpdateRecord } from './update-record.ts';

/** The data directory format this version writes and reads. */
export const STORAGE_FORMAT = 1;
/** The environment file inside the data directory. */
export const DATA_FILE = 'clonekv.mdb';
/** Held by the forwarder using the directory (its pid inside): one forwarder per directory. */
const LOCK_FILE = 'clonekv.pid';

const LMDB_MAGIC = 0xbeefc0de;
const LMDB_DATA_VERSION = 2;
/** Where the meta fields sit in an LMDB meta page (after the page header). */
const META_AT = 24;
const META_KEY = 'state';
/**
 * Every commit is flushed, in both durability modes: an unflushed LMDB commit (its NOSYNC) can
 * leave the file damaged after a machine crash if the file system reorders writes, which no
 * speed is worth. `async` differs in when writers are answered, not in how the disk is written.
 */

/** How the previous run left the directory. */
export interface PreviousRun {
  readonly epoch: string;
  readonly sequence: number;
  /** Whether it was closed cleanly (everything flushed). */
  readonly clean: boolean;
  readonly durability: Durability;
}

/** `sync`: acknowledged once on disk; `async`: acknowledged first, flushed just after. */
export type { Durability } from '../types.ts';

/** A refused or conflicting write outcome, as remembered across a restart. */
export type StoredOutcome = { status: 'conflict'; current: number } | { status: 'rejected'; detail: string };

/** Options of {@link DurableStore.open}. */
export interface DurableStoreOptions {
  /** Most updates the log retains. */
  readonly historyMax: number;
  /** Most bytes of encoded updates the log retains. */
  readonly historyBytes: number;
  /** Writes sequenced since this time (ms) are listed in {@link DurableStore.recentWrites}; default: none. */
  readonly recentSince?: number;
}

/** A recovered map entry: key, entry, owner (for an ephemeral key). */
export type RecoveredEntry = readonly [key: string, entry: StoredEntry, owner: string | undefined];

interface Meta {
  format: number;
  epoch: string;
  sequence: number;
  firstSeq: number;
  clean: boolean;
  durability: Durability;
  /** A pair member's term and term lineage (see forwarder/pair/lineage.ts); absent standalone. */
  pair?: PairState;
}

/** What a member of a primary/backup pair keeps across restarts: its term never goes back. */
export interface PairState {
  readonly term: number;
  /** `[term, first sequence of that term]`, oldest first. */
  readonly lineage: ReadonlyArray<readonly [number, number]>;
}

/** Advice added to every refusal to start. */
function advice(dir: string): string {
  return `move ${dir} aside (or restore it from a backup) and start again; the forwarder then starts empty, or run with --memory (no dataDir)`;
}

/**
 * Test-only fault injection at the storage boundary (not exported from the package's index, not
 * public API). While `writeFault` is set, every commit calls it with the data directory inside
 * the transaction, after the group's records were put; if it throws, the transaction is
 * aborted and the error goes through the same path as a real failed write (so an error with
 * `code: 'ENOSPC'` is reported as a full disk). It lets test/durable-fault.test.ts make a full
 * disk without root; a real one is made in test/durable-enospc.test.ts.
 *
 * @internal
 */
export const storageFaults: { writeFault: ((dir: string) => void) | undefined } = { writeFault: undefined };

/** The data directory: open, recover, commit groups of updates, close. */
export class DurableStore {
  readonly #dir: string;
  readonly #file: string;
  readonly #root: RootDatabase;
  readonly #map: Database<Buffer, Buffer>;
  readonly #log: Database<Buffer, number>;
  readonly #outcomes: Database<Buffer, Buffer>;
  readonly #meta: Database<Buffer, string>;
  readonly #options: DurableStoreOptions;
  readonly #previous: PreviousRun | undefined;
  readonly #repairs: string[] = [];
  #state: Meta;
  /** Encoded sizes of the retained log records, oldest first (from `#sizesHead`). */
  #sizes: number[] = [];
  #sizesHead = 0;
  #logBytes = 0;
  #closed = false;
  /** Writes with a uuid sequenced since `recentSince`: [uuid (latin1), seq, at]. */
  #recent: Array<[string, number, number]> = [];
  /** Damaged log records were dropped at open: the log no longer vouches for the map. */
  #logRepaired = false;

  private constructor(dir: string, root: RootDatabase, options: DurableStoreOptions) {
    this.#dir = dir;
    this.#file = join(dir, DATA_FILE);
    this.#root = root;
    this.#options = options;
    this.#map = root.openDB('map', { encoding: 'binary', keyEncoding: 'binary' });
    this.#log = root.openDB('log', { encoding: 'binary' });
    this.#outcomes = root.openDB('outcomes', { encoding: 'binary', keyEncoding: 'binary' });
    this.#meta = root.openDB('meta', { encoding: 'binary' });
    const meta = this.#readMeta();
    this.#previous = meta && { epoch: meta.epoch, sequence: meta.sequence, clean: meta.clean, durability: meta.durability };
    this.#state = meta ?? { format: STORAGE_FORMAT, epoch: '', sequence: 0, firstSeq: 1, clean: false, durability: 'sync' };
    this.#scanLog();
  }

  /**
   * Opens (creating if need be) the data directory `dir` and checks it: the file's header, the
   * format version, the meta record, every log record's checksum and the log's agreement with
   * the sequence. A damaged log prefix is dropped (see {@link repairs}); anything that cannot
   * be repaired throws.
   *
   * @throws `CLONEKV_STORAGE` naming the file and what to do
   */
  static open(dir: string, options: DurableStoreOptions): DurableStore {
    try {
      mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new StorageError(dir, `cannot create the data directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    const file = join(dir, DATA_FILE);
    const lock = takeLock(dir);
    try {
      checkFileHeader(file, dir);
    } catch (err) {
      releaseLock(lock);
      throw err;
    }
    let root: RootDatabase;
    try {
      // overlappingSync off: a commit's promise resolves once it is flushed to disk, which is
      // what an acknowledgement promises. No write map: a full disk then fails a write
      // instead of killing the process with SIGBUS.
      root = open({ path: file, maxDbs: 8, overlappingSync: false, noSubdir: true, encoding: 'binary' });
    } catch (err) {
      releaseLock(lock);
      throw damaged(dir, `${file} cannot be opened (${(err as Error).message})`, err);
    }
    try {
      return new DurableStore(dir, root, options);
    } catch (err) {
      void root.close();
      releaseLock(lock);
      if (err instanceof StorageError) throw err;
      throw damaged(dir, `${file} cannot be read (${(err as Error).message})`, err);
    }
  }

  /** The data directory. */
  get directory(): string {
    return this.#dir;
  }

  /** How the previous run left the directory; `undefined` for a new one. */
  get previous(): PreviousRun | undefined {
    return this.#previous;
  }

  /** What was dropped to repair the directory at open (empty if nothing). */
  get repairs(): readonly string[] {
    return this.#repairs;
  }

  /** The last sequence on disk. */
  get sequence(): number {
    return this.#state.sequence;
  }

  /** The oldest sequence the log still holds (`sequence + 1` when it is empty). */
  get firstSequence(): number {
    return this.#state.firstSeq;
  }

  /**
   * Writes with a 16-byte uuid sequenced since `recentSince`, oldest first, as [uuid (latin1),
   * sequence, time]: the successful outcomes of the de-duplication window.
   */
  get recentWrites(): ReadonlyArray<readonly [uuid: string, seq: number, at: number]> {
    return this.#recent;
  }

  /**
   * The map: each key's last update, checked. A damaged entry is rebuilt from the log when the
   * log, complete since its first record, still holds that key's last update; otherwise this
   * throws.
   *
   * @throws `CLONEKV_STORAGE` for an entry that is damaged beyond repair
   */
  *entries(): Generator<RecoveredEntry> {
    for (const { key, value } of this.#map.getRange({})) {
      const keyString = key.toString('latin1');
      const l = recordLayout(value);
      // The stored key must be the entry's: a value under the wrong key is damage too.
      if (l !== undefined && l.seq <= this.#state.sequence && l.bodyStart < l.end && value.toString('latin1', l.keyStart, l.ownerStart) === keyString) {
        // uuid, properties and body lie back to back as an entry holds them: one copy.
        const data = Buffer.allocUnsafe(l.end - l.uuidStart);
        value.copy(data, 0, l.uuidStart, l.end);
        const entry = StoredEntry.fromData(l.seq, l.expiresAt, data, l.propertiesStart - l.uuidStart, l.bodyStart - l.propertiesStart);
        yield [keyString, entry, l.uuidStart > l.ownerStart ? value.toString('latin1', l.ownerStart, l.uuidStart) : undefined];
        continue;
      }
      let entry: TimedRecord | undefined;
      {
        entry = this.#logRepaired ? undefined : this.#fromLog(keyString);
        if (entry === undefined) {
          throw damaged(this.#dir, `the entry of key ${JSON.stringify(keyString)} in ${this.#file} is damaged and the log no longer holds its last update`);
        }
        this.#repairs.push(`rebuilt the damaged entry of key ${JSON.stringify(keyString)} from the log (sequence ${entry.record.seq})`);
        this.#bestEffort(() => (entry!.record.body.length === 0 ? this.#map.removeSync(key) : this.#map.putSync(key, encodeRecord(entry!.record, entry!.at))));
        if (entry.record.body.length === 0) continue;
      }
      const r = entry.record;
      yield [keyString, new StoredEntry(r.seq, r.uuid, r.properties, r.body, r.expiresAt), r.owner];
    }
  }

  /** The retained log from `fromSeq` (default: the oldest held) in sequence order. */
  *records(fromSeq = 0): Generator<UpdateRecord> {
    for (const t of this.timedRecords(fromSeq)) yield t.record;
  }

  /** As {@link records}, with the time each update was written. */
  *timedRecords(fromSeq = 0): Generator<TimedRecord> {
    for (const { value } of this.#log.getRange({ start: Math.max(fromSeq, this.#state.firstSeq) })) {
      const t = decodeRecord(value);
      // Checked at open; a record damaged since is where the readable history ends.
      if (t === undefined) return;
      yield t;
    }
  }

  /** Refused or conflicting write outcomes remembered since `since` (ms); older ones are deleted. */
  *outcomes(since: number): Generator<[uuid: string, at: number, outcome: StoredOutcome]> {
    for (const { key, value } of this.#outcomes.getRange({})) {
      const parsed = readChecked(value);
      const at = typeof parsed?.at === 'number' ? parsed.at : 0;
      if (parsed === undefined || at < since || key.length !== 16) {
        this.#bestEffort(() => this.#outcomes.removeSync(key));
        continue;
      }
      yield [key.toString('latin1'), at, parsed.outcome as StoredOutcome];
    }
  }

  /**
   * Starts a run: records its epoch and mode, and that it has not shut down cleanly (yet), on
   * disk before this returns.
   *
   * @throws `CLONEKV_STORAGE` if that cannot be written
   */
  begin(epoch: string, durability: Durability): void {
    const before = this.#state;
    this.#state = { ...this.#state, epoch, durability, clean: false };
    try {
      this.#root.transactionSync(() => this.#writeMeta());
    } catch (err) {
      this.#state = before;
      throw writeFailure(this.#dir, err);
    }
  }

  /**
   * Writes a group of updates, and write outcomes to remember, in one transaction, compacting
   * the log to its bounds in the same transaction; returns once it is flushed to disk.
   *
   * @throws `CLONEKV_STORAGE` if the write failed: nothing of the group is then on disk
   */
  commit(records: readonly TimedRecord[], outcomes: ReadonlyArray<readonly [uuid: string, at: number, outcome: StoredOutcome]>): void {
    if (this.#closed) throw new StorageError(this.#dir, `the data directory ${this.#dir} is closed`);
    // What to put back if the transaction fails: #compact() may replace the sizes array, so the
    // array itself is kept along with its length.
    const before = { state: this.#state, sizesArray: this.#sizes, sizes: this.#sizes.length, head: this.#sizesHead, bytes: this.#logBytes };
    let bytes = 0;
    try {
      this.#root.transactionSync(
        () => {
          for (const t of records) {
            const { record } = t;
            const encoded = encodedOf(t);
            bytes += encoded.length;
            const key = Buffer.from(record.key, 'latin1');
            if (record.body.length === 0) this.#map.removeSync(key);
            else this.#map.putSync(key, encoded);
            this.#log.putSync(record.seq, encoded);
            this.#sizes.push(encoded.length);
            this.#logBytes += encoded.length;
          }
          for (const [uuid, at, outcome] of outcomes) this.#outcomes.putSync(Buffer.from(uuid, 'latin1'), writeChecked({ at, outcome }));
          const first = records[0]?.record.seq;
          const last = records[records.length - 1]?.record.seq;
          if (first !== undefined && last !== undefined) {
            this.#state = { ...this.#state, sequence: last, firstSeq: this.#state.sequence < this.#state.firstSeq ? first : this.#state.firstSeq };
          }
          this.#compact();
          this.#writeMeta();
          storageFaults.writeFault?.(this.#dir);
      });
    } catch (err) {
      // Nothing of the group reached the disk: the bookkeeping goes back too.
      this.#state = before.state;
      this.#sizes = before.sizesArray;
      this.#sizes.length = before.sizes;
      this.#sizesHead = before.head;
      this.#logBytes = before.bytes;
      throw writeFailure(this.#dir, err, bytes);
    }
  }

  /** The pair state the directory holds (`undefined`: none recorded). */
  get pairState(): PairState | undefined {
    return this.#state.pair;
  }

  /**
   * Records a pair member's term and lineage, on disk before this returns.
   *
   * @throws `CLONEKV_STORAGE` if it cannot be written
   */
  savePairState(pair: PairState): void {
    const before = this.#state;
    this.#state = { ...this.#state, pair: { term: pair.term, lineage: pair.lineage.map(([t, f]) => [t, f] as const) } };
    try {
      this.#root.transactionSync(() => this.#writeMeta());
    } catch (err) {
      this.#state = before;
      throw writeFailure(this.#dir, err);
    }
  }

  /**
   * Replaces the whole content by `entries` at `sequence` in one transaction (a backup loading
   * its active's full copy): map, log and outcomes cleared, the log starting after `sequence`.
   *
   * @throws `CLONEKV_STORAGE` if the write failed: nothing changed on disk then
   */
  replace(entries: readonly TimedRecord[], sequence: number, outcomes: ReadonlyArray<readonly [uuid: string, at: number, outcome: StoredOutcome]>): void {
    if (this.#closed) throw new StorageError(this.#dir, `the data directory ${this.#dir} is closed`);
    const before = this.#state;
    try {
      this.#root.transactionSync(() => {
        this.#map.clearSync();
        this.#log.clearSync();
        this.#outcomes.clearSync();
        for (const t of entries) this.#map.putSync(Buffer.from(t.record.key, 'latin1'), encodedOf(t));
        for (const [uuid, at, outcome] of outcomes) this.#outcomes.putSync(Buffer.from(uuid, 'latin1'), writeChecked({ at, outcome }));
        this.#state = { ...this.#state, sequence, firstSeq: sequence + 1 };
        this.#writeMeta();
        storageFaults.writeFault?.(this.#dir);
      });
    } catch (err) {
      this.#state = before;
      throw writeFailure(this.#dir, err);
    }
    this.#sizes = [];
    this.#sizesHead = 0;
    this.#logBytes = 0;
    this.#recent = [];
  }

  /** Closes the directory; `clean` records that everything acknowledged was flushed. Idempotent. */
  close(clean: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#state = { ...this.#state, clean };
      // Flushed whatever the mode: a clean async run keeps its epoch only if all of it is on disk.
      this.#root.transactionSync(() => this.#writeMeta());
    } catch {
      // Left marked unclean: the next start treats it as a crash, which is safe.
    } finally {
      void this.#root.close();
      releaseLock(join(this.#dir, LOCK_FILE));
    }
  }

  /** A repair or clean-up written at once; if it cannot be written now, it is made again at the next start. */
  #bestEffort(write: () => unknown): void {
    try {
      this.#root.transactionSync(write);
    } catch {
      // Nothing was changed on disk.
    }
  }

  /** Drops the oldest log records beyond `historyMax` entries or `historyBytes`. */
  #compact(): void {
    const { historyMax, historyBytes } = this.#options;
    let first = this.#state.firstSeq;
    const last = this.#state.sequence;
    while (last - first + 1 > historyMax || (this.#logBytes > historyBytes && first < last)) {
      this.#log.removeSync(first++);
      this.#logBytes -= this.#sizes[this.#sizesHead++] ?? 0;
    }
    if (this.#sizesHead > 65_536 && this.#sizesHead * 2 > this.#sizes.length) {
      this.#sizes = this.#sizes.slice(this.#sizesHead);
      this.#sizesHead = 0;
    }
    this.#state = { ...this.#state, firstSeq: first };
  }

  #writeMeta(): void {
    this.#meta.putSync(META_KEY, writeChecked(this.#state));
  }

  #readMeta(): Meta | undefined {
    const raw = this.#meta.getBinary(META_KEY);
    if (raw === undefined) {
      if (this.#map.getKeysCount() > 0 || this.#log.getKeysCount() > 0) throw damaged(this.#dir, `${this.#file} holds data but its meta record is missing`);
      return undefined;
    }
    const meta = readChecked(raw) as Partial<Meta> | undefined;
    if (meta === undefined || typeof meta.format !== 'number') throw damaged(this.#dir, `the meta record of ${this.#file} is damaged`);
    if (meta.format > STORAGE_FORMAT) {
      throw new StorageError(
        this.#dir,
        `${this.#file} was written by a newer version of clonekv (data format ${meta.format}; this version reads format ${STORAGE_FORMAT}): ` +
          `run that newer version, or ${advice(this.#dir)}`,
      );
    }
    if (typeof meta.epoch !== 'string' || !Number.isSafeInteger(meta.sequence) || !Number.isSafeInteger(meta.firstSeq) || typeof meta.clean !== 'boolean') {
      throw damaged(this.#dir, `the meta record of ${this.#file} is damaged`);
    }
    const out: Meta = { format: meta.format, epoch: meta.epoch, sequence: meta.sequence!, firstSeq: meta.firstSeq!, clean: meta.clean, durability: meta.durability === 'async' ? 'async' : 'sync' };
    const pair = readPairState(meta.pair);
    if (pair !== undefined) out.pair = pair;
    return out;
  }

  /**
   * Checks every log record (checksum, sequence) and its agreement with the meta record, and
   * learns the record sizes for compaction. Damaged records drop the log up to the last of
   * them: history stays contiguous; the map, checked separately, is what holds the data.
   */
  #scanLog(): void {
    const { sequence } = this.#state;
    const since = this.#options.recentSince ?? Number.POSITIVE_INFINITY;
    let expected = this.#state.firstSeq;
    let badUpTo = 0;
    let count = 0;
    for (const { key, value } of this.#log.getRange({})) {
      count++;
      if (typeof key !== 'number' || key > sequence || key !== expected) {
        throw damaged(this.#dir, `the log in ${this.#file} disagrees with its meta record (sequence ${key}, expected ${expected}, last ${sequence})`);
      }
      expected++;
      const l = recordLayout(value);
      if (l === undefined || l.seq !== key) {
        badUpTo = key;
        this.#sizes.length = 0;
        this.#logBytes = 0;
        this.#recent.length = 0;
        continue;
      }
      this.#sizes.push(value.length);
      this.#logBytes += value.length;
      if (l.at >= since && l.propertiesStart - l.uuidStart === 16) this.#recent.push([value.toString('latin1', l.uuidStart, l.propertiesStart), key, l.at]);
    }
    if (count > 0 && expected - 1 !== sequence) {
      throw damaged(this.#dir, `the log in ${this.#file} ends at sequence ${expected - 1} but its meta record says ${sequence}`);
    }
    if (badUpTo > 0) {
      const dropped = badUpTo - this.#state.firstSeq + 1;
      this.#root.transactionSync(() => {
        for (let s = this.#state.firstSeq; s <= badUpTo; s++) this.#log.removeSync(s);
        this.#state = { ...this.#state, firstSeq: badUpTo + 1 };
        this.#writeMeta();
      });
      this.#logRepaired = true;
      this.#repairs.push(`dropped ${dropped} history record(s) up to sequence ${badUpTo} from ${this.#file}: damaged (the map is intact; peers behind that point take a full snapshot)`);
    }
  }

  /** The last update of `key` if the log still holds it (to repair a damaged map entry). */
  #fromLog(key: string): TimedRecord | undefined {
    for (const { value } of this.#log.getRange({ reverse: true })) {
      const t = decodeRecord(value);
      if (t?.record.key === key) return t;
    }
    return undefined;
  }

}

/**
 * Takes the directory's lock file, or throws naming the forwarder that holds it. A lock left by
 * a process that is gone (killed) is taken over. Returns the lock's path.
 */
function takeLock(dir: string): string {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return path;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new StorageError(dir, `cannot lock the data directory ${dir}: ${(err as Error).message}`, { cause: err });
      }
    }
    let pid = NaN;
    try {
      pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    } catch {
      // Unreadable: treated as stale.
    }
    if (Number.isSafeInteger(pid) && pid > 0 && isAlive(pid)) {
      throw new StorageError(dir, `the data directory ${dir} is in use by another forwarder (pid ${pid}); stop it first, or give this one its own --data directory`);
    }
    try {
      unlinkSync(path);
    } catch {
      // Taken by someone else meanwhile: the next attempt says so.
    }
  }
  throw new StorageError(dir, `the data directory ${dir} is in use by another forwarder (${path})`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function releaseLock(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

/**
 * The error of a failed write. A full disk is named as such: LMDB may report it as an I/O error
 * (EIO), so the free space is checked too.
 */
function writeFailure(dir: string, err: unknown, bytes = 0): StorageError {
  if (err instanceof StorageError) return err;
  const message = (err as Error)?.message ?? String(err);
  const code = (err as { code?: unknown })?.code;
  if (code === 'ENOSPC' || code === 28 || /ENOSPC|No space left|MDB_MAP_FULL|-30792/.test(message) || lowOnSpace(dir, bytes)) {
    return new StorageError(dir, `disk full at ${dir}: the write was not stored (free some space; writes succeed again once there is room)`, { cause: err });
  }
  return new StorageError(dir, `writing to ${dir} failed: ${message}`, { cause: err });
}

/** Whether the file system of `dir` has less room than a write of `bytes` needs (with margin). */
function lowOnSpace(dir: string, bytes: number): boolean {
  try {
    const fs = statfsSync(dir);
    return fs.bavail * fs.bsize < Math.max(1024 * 1024, 4 * bytes);
  } catch {
    return false;
  }
}

function damaged(dir: string, what: string, cause?: unknown): StorageError {
  return new StorageError(dir, `the data directory ${dir} is damaged: ${what}. Nothing was loaded; ${advice(dir)}`, cause === undefined ? undefined : { cause });
}

/**
 * Checks `DIR/clonekv.mdb` before LMDB maps it: an LMDB file with its version, and as long as its
 * meta pages say. A missing or empty file is a new directory.
 */
function checkFileHeader(file: string, dir: string): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return;
  }
  if (size === 0) return;
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(2 * 65_536);
    const got = readSync(fd, head, 0, head.length, 0);
    const meta0 = readLmdbMeta(head, 0, got);
    if (meta0 === undefined) throw damaged(dir, `${file} is not a clonekv data file (no LMDB header: truncated or overwritten)`);
    const meta1 = readLmdbMeta(head, meta0.pageSize, got);
    if (meta1 === undefined) throw damaged(dir, `${file} is truncated (${size} bytes, shorter than its header)`);
    const current = meta1.txnid > meta0.txnid ? meta1 : meta0;
    const needed = (current.lastPage + 1) * meta0.pageSize;
    if (size < needed) throw damaged(dir, `${file} is truncated (${size} bytes; its header says ${needed})`);
  } finally {
    closeSync(fd);
  }
}

function readLmdbMeta(b: Buffer, pageAt: number, length: number): { pageSize: number; lastPage: number; txnid: number } | undefined {
  const at = pageAt + META_AT;
  if (at + 136 > length) return undefined;
  if (b.readUInt32LE(at) !== LMDB_MAGIC || b.readUInt32LE(at + 4) !== LMDB_DATA_VERSION) return undefined;
  const pageSize = b.readUInt32LE(at + 24);
  if (pageSize < 512 || pageSize > 65_536 || (pageSize & (pageSize - 1)) !== 0) return undefined;
  return { pageSize, lastPage: Number(b.readBigUInt64LE(at + 120)), txnid: Number(b.readBigUInt64LE(at + 128)) };
}

/** A pair state read back from the meta record, if it reads as one. */
function readPairState(v: unknown): PairState | undefined {
  const p = v as { term?: unknown; lineage?: unknown } | undefined;
  if (typeof p !== 'object' || p === null || !Number.isSafeInteger(p.term) || !Array.isArray(p.lineage)) return undefined;
  const lineage: Array<readonly [number, number]> = [];
  for (const e of p.lineage as unknown[]) {
    if (!Array.isArray(e) || e.length !== 2 || !Number.isSafeInteger(e[0]) || !Number.isSafeInteger(e[1])) return undefined;
    lineage.push([e[0] as number, e[1] as number]);
  }
  return { term: p.term as number, lineage };
}

/** A small JSON record with a CRC-32 in front. */
function writeChecked(value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value));
  const b = Buffer.allocUnsafe(4 + json.length);
  b.writeUInt32LE(crc32(json), 0);
  json.copy(b, 4);
  return b;
}

function readChecked(b: Buffer): Record<string, unknown> | undefined {
  if (b.length < 4 || b.readUInt32LE(0) !== crc32(b.subarray(4))) return undefined;
  try {
    const v: unknown = JSON.parse(b.subarray(4).toString());
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
