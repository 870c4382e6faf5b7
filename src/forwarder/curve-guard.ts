/**
 * The forwarder's CURVE setup: its server keypair and, with an allow-list, a ZAP handler that
 * admits only the listed client keys (counted both ways).
 *
 * Without an allow-list any client that knows the server's public key may connect: CURVE then
 * only encrypts, and proves the server to the client.
 *
 * @module
 */
import { z85Encode, type CurveKeyPair } from '../security/curve.ts';
import type { ServerCurve } from '../transport/sockets.ts';
import { startZapHandler, type ZapHandler } from '../transport/zap.ts';
import type { CurveStats } from '../types.ts';

/** CURVE on the forwarder's sockets, and the allow-list's ZAP handler. */
export class CurveGuard {
  readonly #keys: CurveKeyPair;
  readonly #allow: ReadonlySet<string> | undefined;
  readonly #zap: ZapHandler | undefined;
  #accepted = 0;
  #refused = 0;

  private constructor(keys: CurveKeyPair, allow: ReadonlySet<string> | undefined, zap: ZapHandler | undefined) {
    this.#keys = keys;
    this.#allow = allow;
    this.#zap = zap;
  }

  /** Starts the ZAP handler if there is an allow-list. */
  static async start(keys: CurveKeyPair, allow: ReadonlySet<string> | undefined): Promise<CurveGuard> {
    if (allow === undefined) return new CurveGuard(keys, undefined, undefined);
    let guard: CurveGuard | undefined;
    const zap = await startZapHandler(
      (mechanism, key) => guard!.#decide(mechanism, key),
      () => {
        // A failed reply leaves that client's handshake waiting; it retries on reconnect.
      },
    );
    guard = new CurveGuard(keys, allow, zap);
    return guard;
  }

  #decide(mechanism: string, key: Buffer | undefined): boolean {
    const ok = mechanism === 'CURVE' && key !== undefined && this.#allow!.has(z85Encode(key));
    if (ok) this.#accepted++;
    else this.#refused++;
    return ok;
  }

  /** What the forwarder's sockets are made with. */
  get server(): ServerCurve {
    return { ...this.#keys, ...(this.#zap ? { context: this.#zap.context } : {}) };
  }

  stats(): CurveStats {
    return { publicKey: this.#keys.publicKey, allowList: this.#allow?.size ?? null, accepted: this.#accepted, refused: this.#refused };
  }

  /** Stops the ZAP handler (after the sockets it guards are closed). */
  close(): void {
    this.#zap?.close();
  }
}
