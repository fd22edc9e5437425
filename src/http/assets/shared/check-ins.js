// Following one event live over a `LiveSocket`: its check-ins and its
// counters. Both the dashboard and the console use these, so the rules for
// resuming live in one place:
// - `checkIns` starts at `after: ""` (or a given cursor), and every later
//   (re)subscription passes the last cursor seen, so a dropped network
//   neither loses nor repeats a check-in;
// - LAGGED (the server dropped a subscriber that fell behind) carries
//   `extensions.lastCursor`; the feed resubscribes from it at once;
// - any other end of the stream resubscribes after a moment, so a server
//   restart heals by itself.

const CHECK_INS = `subscription LiveCheckIns($eventId: ID!, $after: String) {
  checkIns(eventId: $eventId, after: $after) { cursor eventId checkedInAt scanner user { id name } }
}`;
const EVENT_STATS = `subscription LiveStats($eventId: ID!) {
  eventStats(eventId: $eventId) { eventId registered checkedIn presentNow at }
}`;

/** The first error of a GraphQL error list (or a single error). */
function firstError(errors) {
  return Array.isArray(errors) ? errors[0] : errors;
}

/**
 * An event's check-ins, replayed from `after` and then live.
 * `onItem(item)` gets each one (a resume may repeat none, but callers
 * should still de-duplicate by cursor); `onSubscribe()` is called at each
 * (re)send; `onFailed(code, message)` on an error that resuming cannot fix.
 */
export class CheckInFeed {
  #socket;
  #eventId;
  #handlers;
  #lastCursor;
  #stop = null;
  #timer = null;
  #closed = false;

  constructor(socket, eventId, { after = "", onItem, onSubscribe = () => {}, onFailed }) {
    this.#socket = socket;
    this.#eventId = eventId;
    this.#lastCursor = after;
    this.#handlers = { onItem, onSubscribe, onFailed };
  }

  /** The cursor a resubscription starts after. */
  get lastCursor() {
    return this.#lastCursor;
  }

  start() {
    let lagged = false;
    // LAGGED comes as `next` + `complete` mid-stream, or as `error` if nothing was sent yet.
    const isLagged = (errors) => {
      const e = firstError(errors);
      if (e?.extensions?.code !== "LAGGED") return false;
      if (e.extensions.lastCursor) this.#lastCursor = e.extensions.lastCursor;
      return true;
    };
    const resume = (delay) => {
      if (!this.#closed) this.#timer = setTimeout(() => this.start(), delay);
    };
    const failed = (errors) => {
      const e = firstError(errors);
      if (!this.#closed) this.#handlers.onFailed(e?.extensions?.code, e?.message ?? "unknown error");
    };
    this.#stop = this.#socket.subscribe(
      CHECK_INS,
      () => {
        this.#handlers.onSubscribe();
        return { eventId: this.#eventId, after: this.#lastCursor };
      },
      {
        next: (payload) => {
          if (payload.errors?.length) {
            if (isLagged(payload.errors)) lagged = true;
            else failed(payload.errors);
            return;
          }
          const item = payload.data?.checkIns;
          if (!item || this.#closed) return;
          this.#lastCursor = item.cursor;
          this.#handlers.onItem(item);
        },
        error: (errors) => {
          if (isLagged(errors)) resume(0);
          else failed(errors);
        },
        complete: () => resume(lagged ? 0 : 1000),
      },
    );
  }

  stop() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#stop?.();
  }
}

/** An event's counters: `onStats(stats)` at once and on each change. */
export class StatsFeed {
  #socket;
  #eventId;
  #handlers;
  #stop = null;
  #timer = null;
  #closed = false;

  constructor(socket, eventId, { onStats, onFailed }) {
    this.#socket = socket;
    this.#eventId = eventId;
    this.#handlers = { onStats, onFailed };
  }

  start() {
    const failed = (errors) => {
      const e = firstError(errors);
      if (!this.#closed) this.#handlers.onFailed(e?.extensions?.code, e?.message ?? "unknown error");
    };
    this.#stop = this.#socket.subscribe(EVENT_STATS, () => ({ eventId: this.#eventId }), {
      next: (payload) => {
        if (payload.errors?.length) failed(payload.errors);
        else if (payload.data?.eventStats && !this.#closed) this.#handlers.onStats(payload.data.eventStats);
      },
      error: failed,
      complete: () => {
        if (!this.#closed) this.#timer = setTimeout(() => this.start(), 1000);
      },
    });
  }

  stop() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#stop?.();
  }
}
