/**
 * clonekv: a stateful, distributed key-value cache over ZeroMQ (the Clustered Hashmap
 * Protocol, ZeroMQ RFC 12). A {@link Forwarder} sequences and republishes updates; each
 * {@link Peer} keeps a local, always-readable copy of the map or of one subtree.
 *
 * @packageDocumentation
 */
export type {
  DeleteOptions,
  DeleteReason,
  Durability,
  Endpoints,
  Entry,
  FailoverInfo,
  FailoverReason,
  ForwarderOptions,
  ForwarderPeer,
  ForwarderRecovery,
  ForwarderStats,
  HighWaterMarks,
  HistoryEntry,
  HistoryOptions,
  MalformedCounts,
  OwnershipLostInfo,
  PairStats,
  CurveStats,
  PeerOptions,
  PeerStats,
  PeerStatus,
  ResyncReason,
  ServerStats,
  SetOptions,
  WatchEntry,
  WatchOptions,
} from './types.ts';
export type { PeerEvents } from './peer/peer.ts';
export type { PairEvent } from './forwarder/pair/pair.ts';
export {
  ClonekvError,
  ClosedError,
  CompactedError,
  ConflictError,
  ErrorCode,
  InvalidOptionError,
  StorageError,
  TimeoutError,
  UnconfirmedError,
} from './errors.ts';
export { Forwarder } from './forwarder/forwarder.ts';
export { generateIdentity, loadIdentity, saveIdentity, parsePublicKey, PUBLIC_KEY_PREFIX, type Identity } from './security/identity.ts';
export { Policy, type Writer } from './security/policy.ts';
export { Peer } from './peer/peer.ts';
export { SealedValue } from './security/sealed.ts';
export { resolveEndpoints, resolveServers } from './peer/servers.ts';
