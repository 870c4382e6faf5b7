/**
 * The servers a peer may use: the `server` option read into a list of endpoint triples. One
 * server is the usual case; several are the members of a failover pair (or more), tried in
 * turn (see the sync machine's failover rules).
 *
 * @module
 */
import { InvalidOptionError } from '../errors.ts';
import type { Endpoints } from '../types.ts';

/** What the `server` option accepts. */
export type ServerOption = string | Endpoints | ReadonlyArray<string | Endpoints>;

/** Most servers a peer may be given (a write's copies to plain servers are kept as bits of a number). */
export const MAX_SERVERS = 16;

/** The default server when none is given. */
export const DEFAULT_SERVER = 'tcp://127.0.0.1:5556';

/**
 * Turns `tcp://HOST:P` into the three endpoints P, P+1, P+2.
 *
 * @param name - the option named in errors (`server`, `server[1]`…)
 * @throws `CLONEKV_INVALID_OPTION` for anything else, and for the wildcard host `*` (a peer
 *   connects; `*` only means something to a bind)
 */
export function resolveEndpoints(server: string | Endpoints, name = 'server'): Endpoints {
  if (typeof server !== 'string') {
    if (typeof server !== 'object' || server === null) throw new InvalidOptionError(name, 'expected tcp://HOST:PORT or { snapshot, publisher, collector }');
    for (const k of ['snapshot', 'publisher', 'collector'] as const) {
      if (typeof server[k] !== 'string') throw new InvalidOptionError(`${name}.${k}`, 'expected an endpoint string');
    }
    return server;
  }
  const m = /^(tcp:\/\/(?:\[[^\]]+\]|[^:/*,\s]+)):(\d+)$/.exec(server);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65533) {
    throw new InvalidOptionError(name, `expected tcp://HOST:PORT (a host to connect to, PORT from 1 to 65533), got ${JSON.stringify(server)}`);
  }
  return { snapshot: `${m[1]}:${port}`, publisher: `${m[1]}:${port + 1}`, collector: `${m[1]}:${port + 2}` };
}

/**
 * Reads the `server` option: one server (a base endpoint or explicit endpoints), an array of
 * them, or one string of base endpoints separated by commas. Each entry is checked and named
 * when bad (`server[1]`); an empty list, or the same server twice, is refused.
 *
 * @throws `CLONEKV_INVALID_OPTION`
 */
export function resolveServers(server: unknown): Endpoints[] {
  const value = server ?? DEFAULT_SERVER;
  let entries: Array<{ entry: unknown; name: string }>;
  if (Array.isArray(value)) {
    entries = value.map((entry, i) => ({ entry, name: `server[${i}]` }));
  } else if (typeof value === 'string' && value.includes(',')) {
    entries = value.split(',').map((entry, i) => ({ entry: entry.trim(), name: `server (entry ${i + 1} of ${JSON.stringify(value)})` }));
  } else {
    entries = [{ entry: value, name: 'server' }];
  }
  if (entries.length === 0) throw new InvalidOptionError('server', 'expected at least one server');
  if (entries.length > MAX_SERVERS) throw new InvalidOptionError('server', `at most ${MAX_SERVERS} servers, got ${entries.length}`);
  const seen = new Map<string, string>();
  return entries.map(({ entry, name }) => {
    if (typeof entry !== 'string' && (typeof entry !== 'object' || entry === null || Array.isArray(entry))) {
      throw new InvalidOptionError(name, `expected tcp://HOST:PORT or { snapshot, publisher, collector }, got ${Array.isArray(entry) ? 'an array' : entry === null ? 'null' : typeof entry}`);
    }
    const endpoints = resolveEndpoints(entry as string | Endpoints, name);
    const first = seen.get(endpoints.snapshot);
    if (first !== undefined) throw new InvalidOptionError(name, `${endpoints.snapshot} is already given as ${first}: each server once`);
    seen.set(endpoints.snapshot, name);
    return endpoints;
  });
}

/**
 * The name of a server: its base endpoint `tcp://HOST:P` (the snapshot endpoint: for a server
 * given as `tcp://HOST:P`, exactly what was given).
 */
export function serverName(endpoints: Endpoints): string {
  return endpoints.snapshot;
}
