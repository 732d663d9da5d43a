/**
 * The embedded store's cache of query results: a query asked again with no change to the index in
 * between gets the same answer without the index. Least recently used go first, past
 * RESULT_CACHE_ENTRIES entries or RESULT_CACHE_CHARS characters.
 */

/** Query results kept for repeated queries (each valid until the next write): entries and chars. */
const RESULT_CACHE_ENTRIES = 64;
const RESULT_CACHE_CHARS = 32 * 1024 * 1024;

export class ResultCache {
  /** Bumped by every change posted to the index: a result stays valid while it is unchanged. */
  #generation = 0;
  /** Results of recent queries by media type and text, with the generation they were computed at. */
  readonly #entries = new Map<string, { generation: number; body: string }>();
  #chars = 0;

  /** The index's state now: pass it to remember() for a result computed from this state on. */
  get generation(): number {
    return this.#generation;
  }

  /** The index changed: results computed before are stale. */
  invalidate(): void {
    this.#generation++;
  }

  /** The result of `sparql` in `accept`, if one was computed since the last change. */
  get(sparql: string, accept: string): string | undefined {
    const key = keyOf(sparql, accept);
    const cached = this.#entries.get(key);
    if (cached === undefined || cached.generation !== this.#generation) return undefined;
    // Most recently used last.
    this.#entries.delete(key);
    this.#entries.set(key, cached);
    return cached.body;
  }

  /** Keeps `body` when the index is still in the state it was computed from (`generation`). */
  remember(sparql: string, accept: string, generation: number, body: string): void {
    if (generation !== this.#generation) return;
    const key = keyOf(sparql, accept);
    const previous = this.#entries.get(key);
    if (previous !== undefined) {
      this.#entries.delete(key);
      this.#chars -= previous.body.length;
    }
    if (body.length > RESULT_CACHE_CHARS / 4) return;
    this.#entries.set(key, { generation, body });
    this.#chars += body.length;
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size <= RESULT_CACHE_ENTRIES && this.#chars <= RESULT_CACHE_CHARS) break;
      this.#entries.delete(oldest);
      this.#chars -= entry.body.length;
    }
  }

  clear(): void {
    this.#entries.clear();
    this.#chars = 0;
  }
}

const keyOf = (sparql: string, accept: string): string => `${accept}\n${sparql}`;
