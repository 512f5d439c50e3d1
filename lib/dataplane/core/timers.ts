/**
 * Deadlines of the core: one binary heap of (time, owner, generation). An owner re-arms by
 * bumping its generation, so a stale entry is skipped when it surfaces instead of being searched
 * for and removed. No clock inside: times are what the driver passed in.
 * @module
 */

/** Something with at most one deadline at a time. */
export interface TimerOwner {
  /** Bumped on every arm and disarm; an entry whose generation differs is stale. */
  timerGen: number;
  onTimeout(now: number): void;
}

/** Heap size below which stale entries are only dropped as they surface. */
const COMPACT_MIN = 1024;

interface Entry {
  at: number;
  owner: TimerOwner;
  gen: number;
}

/** A min-heap of deadlines. */
export class Timers {
  #heap: Entry[] = [];
  /** Past this size the stale entries are dropped (amortised: it doubles with the live ones). */
  #compactAt = COMPACT_MIN;

  /** Arms `owner`'s deadline at `at` (replacing any earlier one). */
  arm(owner: TimerOwner, at: number): void {
    const gen = ++owner.timerGen;
    if (this.#heap.length >= this.#compactAt) this.#compact();
    const h = this.#heap;
    h.push({ at, owner, gen });
    this.#up(h.length - 1);
  }

  /**
   * Drops stale entries. Without it a connection that ends long before its deadline (most do)
   * leaves its entry, and with it the connection's object, in the heap until the deadline.
   */
  #compact(): void {
    const live = this.#heap.filter((e) => e.gen === e.owner.timerGen);
    live.sort((x, y) => x.at - y.at); // a sorted array is a heap
    this.#heap = live;
    this.#compactAt = Math.max(COMPACT_MIN, 2 * live.length);
  }

  #up(i: number): void {
    const h = this.#heap;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= h[i]!.at) break;
      [h[p], h[i]] = [h[i]!, h[p]!];
      i = p;
    }
  }

  /** Cancels `owner`'s deadline. */
  disarm(owner: TimerOwner): void {
    owner.timerGen++;
  }

  /** The earliest live deadline, or Infinity. */
  next(): number {
    this.#prune();
    return this.#heap[0]?.at ?? Infinity;
  }

  /** Fires every deadline at or before `now`, earliest first. */
  fire(now: number): void {
    for (;;) {
      this.#prune();
      const top = this.#heap[0];
      if (top === undefined || top.at > now) return;
      this.#pop();
      top.owner.timerGen++; // fired: not armed any more
      top.owner.onTimeout(now);
    }
  }

  /** Live and stale entries (for tests: stays bounded). */
  get size(): number {
    return this.#heap.length;
  }

  #prune(): void {
    while (this.#heap.length > 0 && this.#heap[0]!.gen !== this.#heap[0]!.owner.timerGen) {
      this.#pop();
    }
  }

  #pop(): void {
    const h = this.#heap;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.at < h[m]!.at) m = l;
      if (r < h.length && h[r]!.at < h[m]!.at) m = r;
      if (m === i) return;
      [h[m], h[i]] = [h[i]!, h[m]!];
      i = m;
    }
  }
}
