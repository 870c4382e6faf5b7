/**
 * The forwarder's options, checked at once (a bad one is named) and filled in with defaults.
 *
 * @module
 */
import { InvalidOptionError } from '../errors.ts';
import { policyOption, type Policy } from '../security/policy.ts';
import { booleanOption, durationOption, intOption, rejectUnknown, stringOption } from '../options.ts';
import { allowListOption, serverCurveOption, type CurveKeyPair } from '../security/curve.ts';
import type { Durability, ForwarderOptions, HighWaterMarks } from '../types.ts';

/** Longest `dedupTtl`: an hour, far beyond any sensible write timeout. */
const MAX_DEDUP_TTL_MS = 3_600_000;

/**
 * The bounds of the options that `clonekv serve` also takes as flags (shared, so a flag and its
 * option never disagree): `[min, max]`.
 */
export const OPTION_BOUNDS = {
  dedupTtl: [1, MAX_DEDUP_TTL_MS],
  dedupMax: [1, 100_000_000],
  historyMax: [1, 1_000_000_000],
  historyBytes: [1024, Number.MAX_SAFE_INTEGER],
} as const satisfies Record<string, readonly [number, number]>;

/** Options with defaults applied. */
export interface Settings {
  readonly bind: string;
  readonly port: number;
  readonly heartbeatInterval: number;
  readonly maxValueBytes: number;
  readonly dedupTtl: number;
  readonly dedupMax: number;
  readonly snapshotBatch: number;
  readonly joinWait: number;
  readonly peerTimeout: number;
  readonly checkValues: boolean;
  readonly publisherHwm: { send: number; receive: number };
  readonly snapshotHwm: { send: number; receive: number };
  readonly collectorHwm: { send: number; receive: number };
  /** Where the durable forwarder keeps its data; `undefined`: in memory only. */
  readonly dataDir: string | undefined;
  readonly durability: Durability;
  readonly historyMax: number;
  readonly historyBytes: number;
  /** A pair member's settings; `undefined` standalone. */
  readonly pair: PairSettings | undefined;
  /** The write policy at start (`undefined`: every write allowed, as before). */
  readonly policy: Policy | undefined;
  /** The server's CURVE keypair; `undefined`: no CURVE. */
  readonly curve: CurveKeyPair | undefined;
  /** Client keys admitted (z85); `undefined`: any client that knows the server key. */
  readonly curveAllow: ReadonlySet<string> | undefined;
}

/** A member of a primary/backup pair. */
export interface PairSettings {
  readonly role: 'primary' | 'backup';
  readonly partner: string;
  readonly statePort: number;
  readonly partnerTimeout: number;
}

/** Default state ports: the primary binds 5003, the backup 5004 (the protocol's). */
export const DEFAULT_STATE_PORT = { primary: 5003, backup: 5004 } as const;

const KNOWN_OPTIONS: ReadonlyArray<keyof ForwarderOptions> = [
  'bind',
  'port',
  'heartbeatInterval',
  'maxValueBytes',
  'dedupTtl',
  'dedupMax',
  'snapshotBatch',
  'publisherHwm',
  'snapshotHwm',
  'collectorHwm',
  'joinWait',
  'peerTimeout',
  'checkValues',
  'dataDir',
  'durability',
  'historyMax',
  'historyBytes',
  'role',
  'partner',
  'statePort',
  'partnerTimeout',
  'policy',
  'curve',
  'curveAllow',
];

function hwmOption(name: string, value: HighWaterMarks | undefined, send: number, receive: number) {
  return {
    send: intOption(`${name}.send`, value?.send, send, 0),
    receive: intOption(`${name}.receive`, value?.receive, receive, 0),
  };
}

/** Checks options and fills in defaults. Throws `CLONEKV_INVALID_OPTION` naming a bad one. */
export function forwarderSettings(options: ForwarderOptions = {}): Settings {
  rejectUnknown(options, KNOWN_OPTIONS);
  // Said at once rather than ignored: without a data directory there is nothing to make durable.
  if (options.durability !== undefined && options.dataDir === undefined) throw new InvalidOptionError('durability', 'applies only with dataDir (a forwarder without one keeps nothing on disk)');
  return {
    bind: stringOption('bind', options.bind, '127.0.0.1'),
    port: intOption('port', options.port, 5556, 0, 65533),
    heartbeatInterval: durationOption('heartbeatInterval', options.heartbeatInterval, 1000, 10),
    maxValueBytes: intOption('maxValueBytes', options.maxValueBytes, 1024 * 1024, 1, 256 * 1024 * 1024),
    dedupTtl: durationOption('dedupTtl', options.dedupTtl, 60_000, ...OPTION_BOUNDS.dedupTtl),
    dedupMax: intOption('dedupMax', options.dedupMax, 500_000, ...OPTION_BOUNDS.dedupMax),
    snapshotBatch: intOption('snapshotBatch', options.snapshotBatch, 512, 1, 65_536),
    joinWait: durationOption('joinWait', options.joinWait, 2000, 0),
    peerTimeout: durationOption('peerTimeout', options.peerTimeout, 3000, 10),
    checkValues: booleanOption('checkValues', options.checkValues, true),
    publisherHwm: hwmOption('publisherHwm', options.publisherHwm, 10_000, 1000),
    snapshotHwm: hwmOption('snapshotHwm', options.snapshotHwm, 1000, 10_000),
    collectorHwm: hwmOption('collectorHwm', options.collectorHwm, 1000, 10_000),
    dataDir: options.dataDir === undefined ? undefined : nonEmpty('dataDir', stringOption('dataDir', options.dataDir, '')),
    durability: durabilityOption(options.durability),
    historyMax: intOption('historyMax', options.historyMax, 1_000_000, ...OPTION_BOUNDS.historyMax),
    historyBytes: intOption('historyBytes', options.historyBytes, 256 * 1024 * 1024, ...OPTION_BOUNDS.historyBytes),
    pair: pairSettings(options),
    policy: policyOption(options.policy),
    ...curveSettings(options),
  };
}

function curveSettings(options: ForwarderOptions): Pick<Settings, 'curve' | 'curveAllow'> {
  const curve = serverCurveOption(options.curve);
  return { curve, curveAllow: allowListOption(options.curveAllow, curve) };
}

/** The pair options: all or none (a partner without a role, or a role without a partner, is named). */
function pairSettings(options: ForwarderOptions): PairSettings | undefined {
  const { role, partner, statePort, partnerTimeout } = options;
  if (role === undefined) {
    for (const [name, value] of [['partner', partner], ['statePort', statePort], ['partnerTimeout', partnerTimeout]] as const) {
      if (value !== undefined) throw new InvalidOptionError(name, 'applies only with role ("primary" or "backup"): a standalone forwarder has no partner');
    }
    return undefined;
  }
  if (role !== 'primary' && role !== 'backup') throw new InvalidOptionError('role', `expected "primary" or "backup", got ${JSON.stringify(role)}`);
  if (partner === undefined) throw new InvalidOptionError('partner', `is required with role ${JSON.stringify(role)}: the partner's state endpoint, tcp://HOST:PORT`);
  return {
    role,
    partner: partnerEndpoint(partner),
    statePort: intOption('statePort', statePort, DEFAULT_STATE_PORT[role], 0, 65535),
    partnerTimeout: durationOption('partnerTimeout', partnerTimeout, 2000, 10),
  };
}

function partnerEndpoint(value: unknown): string {
  const m = typeof value === 'string' ? /^tcp:\/\/(\[[^\]]+\]|[^:/\s]+):(\d{1,5})$/.exec(value) : null;
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535 || m[1] === '*') {
    throw new InvalidOptionError('partner', `expected the partner's state endpoint as tcp://HOST:PORT (a host and a port from 1 to 65535), got ${JSON.stringify(value)}`);
  }
  return value as string;
}

function nonEmpty(name: string, value: string): string {
  if (value.length === 0) throw new InvalidOptionError(name, 'expected a directory path, got an empty string');
  return value;
}

function durabilityOption(value: unknown): Durability {
  if (value === undefined) return 'sync';
  if (value === 'sync' || value === 'async') return value;
  throw new InvalidOptionError('durability', `expected "sync" or "async", got ${JSON.stringify(value)}`);
}
