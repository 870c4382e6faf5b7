/**
 * Every forwarder option is checked at start: NaN, negative, fractional, too large, the wrong
 * type and unknown (misspelt or removed) names are refused with CLONEKV_INVALID_OPTION naming
 * the option, before any port is bound. No sockets are needed for a refusal.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Forwarder, type ForwarderOptions } from '../src/index.ts';

const DURATIONS = ['heartbeatInterval', 'peerTimeout', 'joinWait', 'dedupTtl'] as const;
const BAD_DURATIONS = [Number.NaN, -1, 1.5, 2 ** 31, Number.POSITIVE_INFINITY, '100'];

function refuses(options: Record<string, unknown>, name: string) {
  return assert.rejects(Forwarder.start({ port: 0, ...options } as ForwarderOptions), (e: { code?: string; option?: string; message: string }) => {
    assert.equal(e.code, 'CLONEKV_INVALID_OPTION', e.message);
    assert.equal(e.option, name, e.message);
    return true;
  });
}

test('every duration option refuses NaN, negative, fractional, past 2^31 ms, infinite and string values, naming it', async () => {
  for (const name of DURATIONS) for (const bad of BAD_DURATIONS) await refuses({ [name]: bad }, name);
  await refuses({ dedupTtl: 3_600_001 }, 'dedupTtl');
});

test('counts and sizes are refused out of range, naming the option', async () => {
  await refuses({ dedupMax: 0 }, 'dedupMax');
  await refuses({ snapshotBatch: 0 }, 'snapshotBatch');
  await refuses({ maxValueBytes: 0 }, 'maxValueBytes');
  await refuses({ maxValueBytes: 2 ** 40 }, 'maxValueBytes');
  await refuses({ historyMax: -1 }, 'historyMax');
  await refuses({ port: 65_534 }, 'port');
  await refuses({ checkValues: 'yes' }, 'checkValues');
});

test('a misspelt option, or one that no longer exists, is refused by name', async () => {
  await refuses({ peerTimout: 5 }, 'peerTimout');
  await refuses({ dedupWindow: 100 }, 'dedupWindow');
});

test('the pair options refuse extreme values too, naming the option', async () => {
  const pair = { role: 'primary', partner: 'tcp://127.0.0.1:5004', statePort: 0 } as const;
  for (const bad of BAD_DURATIONS) await refuses({ ...pair, partnerTimeout: bad }, 'partnerTimeout');
  for (const bad of [-1, 1.5, 65_536, Number.NaN, '5003']) await refuses({ ...pair, statePort: bad }, 'statePort');
  for (const bad of ['', 'tcp://', 'tcp://127.0.0.1', 'tcp://127.0.0.1:0', 'tcp://*:5004', 'udp://127.0.0.1:5004', 42]) await refuses({ ...pair, partner: bad }, 'partner');
  await refuses({ ...pair, role: 'leader' }, 'role');
});
