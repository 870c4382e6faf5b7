/**
 * Asking one server for its counters without joining it. A passive member of a pair answers
 * KVSTATS but serves no snapshot, so a peer could never join it to ask; `clonekv stats` and
 * `clonekv peers` use this to show the role and replication lag of every server of a list.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { ClonekvError, ErrorCode } from '../errors.ts';
import { Command } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { ZERO_SEQUENCE } from '../protocol/sequence.ts';
import { connectDealer, curveKeyPair } from '../transport/sockets.ts';
import type { ServerStats } from '../types.ts';

const STATS = Buffer.from(Command.Stats);

/**
 * Sends one KVSTATS to the server at `server` (its base endpoint `tcp://HOST:P`) on a DEALER of
 * its own and resolves with the answer: what `Forwarder.stats()` returns, plus `peerList`.
 *
 * @throws {@link ClonekvError} `CLONEKV_TIMEOUT` if no answer within `timeoutMs` (the server is
 *   down, paused, or a plain CHP server, which has no counters), `CLONEKV_MALFORMED` for an
 *   unreadable answer, `CLONEKV_TRANSPORT` for an endpoint that cannot be connected
 */
export async function askServerStats(server: string, timeoutMs: number, curve?: { serverKey: string; publicKey?: string; secretKey?: string }): Promise<ServerStats> {
  // Not a peer id (no "ckv1" prefix): the server takes this socket for a plain client, which is
  // all a stats request needs.
  const socket = connectDealer(server, `stats-${randomBytes(8).toString('hex')}`, { send: 16, receive: 16 }, curve && { serverKey: curve.serverKey, ...(curve.publicKey && curve.secretKey ? { publicKey: curve.publicKey, secretKey: curve.secretKey } : curveKeyPair()) });
  const uuid = randomBytes(16);
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ClonekvError(ErrorCode.Timeout, `stats: no answer from the server at ${server} within ${timeoutMs} ms`)), timeoutMs);
    });
    const answer = (async (): Promise<Buffer[]> => {
      await socket.send([STATS, ZERO_SEQUENCE, uuid, EMPTY_FRAME, EMPTY_FRAME]);
      for (;;) {
        const frames = await socket.receive();
        if (frames[0]?.equals(STATS) && frames[2]?.equals(uuid)) return frames;
      }
    })();
    answer.catch(() => {}); // the socket is closed when the timer wins: nothing to report then
    const frames = await Promise.race([answer, timeout]);
    try {
      return JSON.parse(frames[4]?.toString('utf8') ?? 'null') as ServerStats;
    } catch (err) {
      throw new ClonekvError(ErrorCode.Malformed, `unreadable stats reply from the server at ${server}`, { cause: err });
    }
  } finally {
    clearTimeout(timer);
    socket.close();
  }
}
