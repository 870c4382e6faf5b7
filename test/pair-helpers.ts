/**
 * Fixtures for primary/backup pair tests: free ports for the two state channels (each member
 * must know its partner's before either starts), and a pair started with short timeouts.
 */
import type { TestContext } from 'node:test';
import { Forwarder, type ForwarderOptions } from '../src/index.ts';

import { freePort } from './pair-fixture.ts';

export { freePort };

/** Short timings for tests: beats every 50 ms, the partner gone after 400 ms. */
export const FAST = { heartbeatInterval: 50, partnerTimeout: 400 } as const;

/** The two state ports of a pair, chosen before either member starts. */
export interface PairPorts {
  readonly primary: number;
  readonly backup: number;
}

export async function pairPorts(): Promise<PairPorts> {
  const primary = await freePort();
  const backup = await freePort([primary]);
  return { primary, backup };
}

/** Starts one member of a pair on the given state ports (closed after the test). */
export async function member(t: TestContext, role: 'primary' | 'backup', ports: PairPorts, options: ForwarderOptions = {}): Promise<Forwarder> {
  const mine = role === 'primary' ? ports.primary : ports.backup;
  const theirs = role === 'primary' ? ports.backup : ports.primary;
  const f = await Forwarder.start({ port: 0, ...FAST, role, statePort: mine, partner: `tcp://127.0.0.1:${theirs}`, ...options });
  t.after(() => f.close());
  return f;
}

/** Starts a primary and a backup and waits until the backup follows the primary. */
export async function startPair(
  t: TestContext,
  options: { primary?: ForwarderOptions; backup?: ForwarderOptions; both?: ForwarderOptions } = {},
): Promise<{ primary: Forwarder; backup: Forwarder; ports: PairPorts }> {
  const ports = await pairPorts();
  const primary = await member(t, 'primary', ports, { ...options.both, ...options.primary });
  const backup = await member(t, 'backup', ports, { ...options.both, ...options.backup });
  await replicating(primary, backup);
  return { primary, backup, ports };
}

/** Waits until `active` replicates to `passive` (or fails after `ms`). */
export async function replicating(active: Forwarder, passive: Forwarder, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const a = active.stats().pair;
    const p = passive.stats().pair;
    if (a?.role === 'active' && a.replication.state === 'replicating' && p?.role === 'passive' && p.replication.state === 'following') return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for replication: active ${JSON.stringify(a)}, passive ${JSON.stringify(p)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
