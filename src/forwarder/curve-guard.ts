/**
 * The forwarder's CURVE setup: its server keypair and a ZAP handler (in a zeromq context of
 * its own) that decides who may connect:
 * - on the three forwarder ports, with an allow-list, only the listed client keys (counted both
 *   ways); without one, any client that knows the server's public key (CURVE then only
 *   encrypts, and proves the server to the client);
 * - on a pair member's state port, only a client showing the server's own public key: the
 *   partner, which holds the same key file.
 *
 * @module
 */
import { z85Encode, type CurveKeyPair } from '../security/curve.ts';
import { STATE_ZAP_DOMAIN, type ServerCurve } from '../transport/sockets.ts';
import { startZapHandler, type ZapHandler } from '../transport/zap.ts';
import type { CurveStats } from '../types.ts';

/** CURVE on the forwarder's sockets, and the allow-list's ZAP handler. */
export class CurveGuard {
  readonly #keys: CurveKeyPair;
  readonly #allow: ReadonlySet<string> | undefined;
  readonly #zap: ZapHandler;
  #accepted = 0;
  #refused = 0;
  #stateRefused = 0;

  private constructor(keys: CurveKeyPair, allow: ReadonlySet<string> | undefined, zap: ZapHandler) {
    this.#keys = keys;
    this.#allow = allow;
    this.#zap = zap;
  }

  /** Starts the ZAP handler. */
  static async start(keys: CurveKeyPair, allow: ReadonlySet<string> | undefined): Promise<CurveGuard> {
    let guard: CurveGuard | undefined;
    const zap = await startZapHandler(
      (domain, mechanism, key) => guard!.#decide(domain, mechanism, key),
      () => {
        // A failed reply leaves that client's handshake waiting; it retries on reconnect.
      },
    );
    guard = new CurveGuard(keys, allow, zap);
    return guard;
  }

  #decide(domain: string, mechanism: string, key: Buffer | undefined): boolean {
    const client = mechanism === 'CURVE' && key !== undefined ? z85Encode(key) : undefined;
    const ok = client !== undefined && (domain === STATE_ZAP_DOMAIN ? client === this.#keys.publicKey : this.#allow === undefined || this.#allow.has(client));
    if (domain === STATE_ZAP_DOMAIN) {
      if (!ok) this.#stateRefused++;
      return ok;
    }
    if (ok) this.#accepted++;
    else this.#refused++;
    return ok;
  }

  /** What the forwarder's sockets are made with. */
  get server(): ServerCurve {
    return { ...this.#keys, context: this.#zap.context };
  }

  stats(): CurveStats {
    return { publicKey: this.#keys.publicKey, allowList: this.#allow?.size ?? null, accepted: this.#accepted, refused: this.#refused, stateRefused: this.#stateRefused };
  }

  /** Stops the ZAP handler (after the sockets it guards are closed). */
  close(): void {
    this.#zap.close();
  }
}
