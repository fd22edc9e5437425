// The GraphQL client over WebSocket, shared by the dashboard and the
// console: one socket to `/graphql` speaking graphql-transport-ws, with the
// credentials in `connection_init`. It pings, notices a half-open socket,
// reconnects with backoff and sends every subscription again; see
// `check-ins.js` for resuming a check-in stream from its last cursor.

/** How often the socket is pinged, and how long a silent socket is trusted. */
const HEARTBEAT_MS = 10_000;
const SILENT_LIMIT_MS = 25_000;
/** Reconnect backoff: doubles from BASE up to MAX, with ±25 % jitter. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;

/**
 * One WebSocket to `/graphql` speaking graphql-transport-ws, kept alive for
 * as long as it is started: it pings, notices a silent (half-open) socket,
 * and reconnects with exponential backoff, then sends every subscription
 * again. Variables are functions, read at each (re)send, so a subscription
 * can resume from its latest cursor.
 */
export class LiveSocket {
  #url;
  #token;
  #ws = null;
  #acked = false;
  #heardData = false;
  #subs = new Set();
  #byId = new Map();
  #nextId = 1;
  #attempts = 0;
  #retryAt = 0;
  #retryTimer = null;
  #countdown = null;
  #heartbeat = null;
  #lastHeard = 0;
  #stopped = true;
  #onOnline = () => this.#retryNow();
  #onOffline = () => this.#abandon("offline");

  /** Called with (state, text) as the connection changes. */
  onstatus = () => {};
  /** Called with the close reason when the server refuses the credentials. */
  onauthfailure = () => {};

  constructor(url, token) {
    this.#url = url;
    this.#token = token;
  }

  start() {
    this.#stopped = false;
    window.addEventListener("online", this.#onOnline);
    window.addEventListener("offline", this.#onOffline);
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    window.removeEventListener("online", this.#onOnline);
    window.removeEventListener("offline", this.#onOffline);
    clearTimeout(this.#retryTimer);
    clearInterval(this.#countdown);
    clearInterval(this.#heartbeat);
    this.#subs.clear();
    this.#byId.clear();
    const ws = this.#ws;
    this.#ws = null;
    if (ws) ws.close(1000, "bye");
    this.onstatus("idle", "Not connected");
  }

  /**
   * Subscribes; `sink` has next(payload), error(errors) and complete().
   * Returns a function that unsubscribes.
   */
  subscribe(query, variables, sink) {
    const sub = { query, variables, sink, id: null };
    this.#subs.add(sub);
    if (this.#acked) this.#sendSubscribe(sub);
    return () => {
      this.#subs.delete(sub);
      if (sub.id && this.#byId.delete(sub.id)) this.#send({ id: sub.id, type: "complete" });
    };
  }

  #connect() {
    clearInterval(this.#countdown);
    this.onstatus("connecting", "Connecting…");
    let ws;
    try {
      ws = new WebSocket(this.#url, "graphql-transport-ws");
    } catch {
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;
    this.#acked = false;
    this.#heardData = false;
    this.#lastHeard = Date.now();
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#send({ type: "connection_init", payload: { authorization: `Bearer ${this.#token}` } });
    };
    ws.onmessage = (ev) => {
      if (ws !== this.#ws) return;
      this.#lastHeard = Date.now();
      this.#receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.#ws) return;
      this.#closed(ev.code, ev.reason);
    };
    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS);
  }

  #send(msg) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(msg));
  }

  #sendSubscribe(sub) {
    sub.id = String(this.#nextId++);
    this.#byId.set(sub.id, sub);
    this.#send({ id: sub.id, type: "subscribe", payload: { query: sub.query, variables: sub.variables() } });
  }

  #receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    const sub = msg.id ? this.#byId.get(msg.id) : undefined;
    switch (msg.type) {
      case "connection_ack":
        this.#acked = true;
        this.#attempts = 0;
        this.onstatus("syncing", "Syncing…");
        for (const s of this.#subs) this.#sendSubscribe(s);
        break;
      case "next":
        if (!sub) return;
        if (!this.#heardData) {
          this.#heardData = true;
          this.onstatus("live", "Live");
        }
        sub.sink.next(msg.payload);
        break;
      case "error":
      case "complete":
        if (!sub) return;
        this.#byId.delete(msg.id);
        this.#subs.delete(sub);
        if (msg.type === "error") sub.sink.error(msg.payload);
        else sub.sink.complete();
        break;
      case "ping":
        this.#send({ type: "pong" });
        break;
      default:
        break;
    }
  }

  #beat() {
    if (!this.#ws) return;
    const silent = Date.now() - this.#lastHeard;
    if (silent > SILENT_LIMIT_MS || (!this.#acked && silent > HEARTBEAT_MS)) {
      this.#abandon("no answer from the server");
    } else if (this.#acked) {
      this.#send({ type: "ping" });
    }
  }

  /** Gives up on the current socket without waiting for its close event. */
  #abandon(reason) {
    const ws = this.#ws;
    if (!ws || this.#stopped) return;
    this.#ws = null;
    ws.close(1000, reason);
    this.#closed(1006, reason);
  }

  #closed(code, reason) {
    this.#ws = null;
    this.#acked = false;
    this.#byId.clear();
    clearInterval(this.#heartbeat);
    if (this.#stopped) return;
    // 4403: the server refused the token (or it expired); retrying cannot help.
    // Every other close (a restart, a dropped network, 4408, 4429) is retried.
    if (code === 4403) {
      this.onstatus("error", "Not allowed");
      this.onauthfailure(reason);
      return;
    }
    this.#scheduleRetry();
  }

  #scheduleRetry() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.#attempts);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.#attempts = Math.min(this.#attempts + 1, 16);
    this.#retryAt = Date.now() + delay;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
    const show = () => {
      if (!navigator.onLine) {
        this.onstatus("offline", "Offline: waiting for the network");
        return;
      }
      const secs = Math.max(1, Math.ceil((this.#retryAt - Date.now()) / 1000));
      this.onstatus("reconnecting", `Reconnecting in ${secs} s`);
    };
    show();
    clearInterval(this.#countdown);
    this.#countdown = setInterval(show, 1000);
  }

  #retryNow() {
    if (this.#stopped || this.#ws) return;
    clearTimeout(this.#retryTimer);
    this.#connect();
  }
}
