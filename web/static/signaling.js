// WebSocket client for the teleconsult signaling protocol v1 (docs/protocol.md).
//
// Incoming messages are handled strictly one at a time: each handler runs on a promise
// chain, so an `offer` is fully answered before the next message (another offer, a
// participant_joined, ...) is looked at. A handler that throws is reported and the chain
// moves on.

export class Signaling {
  /**
   * @param {string} url ws(s)://host/ws
   * @param {{onMessage: (msg: object) => (void|Promise<void>),
   *          onClose: (ev: CloseEvent) => void,
   *          onHandlerError?: (err: unknown, msg: object) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.ws = null;
    this.queue = Promise.resolve();
    this.closed = false;
  }

  /** Open the socket; resolves once it is open, rejects if it closes first. */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let opened = false;
      ws.addEventListener("open", () => {
        opened = true;
        resolve();
      });
      ws.addEventListener("message", (ev) => this._enqueue(ev.data));
      ws.addEventListener("close", (ev) => {
        this.closed = true;
        if (!opened) {
          reject(new Error(`websocket closed before opening (${ev.code})`));
        }
        // Let already-queued messages (e.g. an error before a 4001 close) run first.
        this.queue = this.queue.then(() => this.handlers.onClose(ev));
      });
    });
  }

  _enqueue(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn("teleconsult: ignoring a non-JSON frame");
      return;
    }
    if (!msg || typeof msg.type !== "string") return;
    this.queue = this.queue
      .then(() => this.handlers.onMessage(msg))
      .catch((err) => {
        console.error("teleconsult: handling", msg.type, "failed", err);
        this.handlers.onHandlerError?.(err, msg);
      });
  }

  /** Send one message; returns false if the socket is not open. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  close(code = 1000, reason = "") {
    this.closed = true;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
  }
}

export function signalingUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}
