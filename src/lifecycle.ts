/**
 * The one lifecycle shape of every clonekv resource (forwarder, peer): `close()` runs its work
 * once however often it is called, `closed()` resolves when that work is done and never rejects.
 *
 * @module
 */

/** Runs a resource's close work once and tells when it has finished. */
export class Lifecycle {
  #closing: Promise<void> | undefined;
  #resolveClosed!: () => void;
  readonly #closed = new Promise<void>((resolve) => {
    this.#resolveClosed = resolve;
  });

  /** Whether `close()` has been called (the resource refuses new work from then on). */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Runs `work` the first time it is called; later calls return the same promise. `closed()`
   * resolves once `work` settles, even if it throws (the error still reaches `close()`'s caller).
   */
  close(work: () => Promise<void>): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await work();
      } finally {
        this.#resolveClosed();
      }
    })();
    return this.#closing;
  }

  /** Resolves once closed. Never rejects. */
  closed(): Promise<void> {
    return this.#closed;
  }
}
