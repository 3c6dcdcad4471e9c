// Notices, within about a second, that the media connection stopped bringing anything in.
//
// The browser calls an ICE connection "disconnected" only after several seconds without an
// answer to its checks (about seven measured in Chromium after an address change), and a
// signaling socket whose address is gone stays "open" for minutes. Both are too slow for a
// call. While media flows, the server sends many packets a second (audio alone is fifty);
// when the transport's received bytes stop growing for STALL_MS after a steady stream, the
// path is very likely gone, and the page can check its signaling socket at once.

const SAMPLE_MS = 250;
const STALL_MS = 800;
// "Steady" means at least this many growing samples in the second before the silence, so a
// connection that only carries RTCP (nobody else publishes) never counts as stalled.
const STEADY_SAMPLES = 3;

export class StallWatch {
  /**
   * @param {() => RTCPeerConnection | null} getPc the page's current media connection
   * @param {() => void} onStall called once per silence, when a steady stream stops
   * @param {() => void} onClear called when a stall is over: bytes arrive again, or the
   *   page has a new connection (or none)
   */
  constructor(getPc, onStall, onClear) {
    this.getPc = getPc;
    this.onStall = onStall;
    this.onClear = onClear;
    this.timer = null;
    this.reset();
  }

  reset() {
    this.pc = null;
    this.bytes = -1;
    this.changes = []; // times (ms) at which the received bytes were seen to grow
    this.stalled = false;
  }

  start() {
    if (this.timer === null) this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.stalled) this.onClear();
    this.reset();
  }

  async sample() {
    const pc = this.getPc();
    if (pc !== this.pc) {
      if (this.stalled) this.onClear();
      this.reset();
      this.pc = pc;
    }
    if (!pc) return;
    let bytes = 0;
    try {
      (await pc.getStats()).forEach((r) => {
        if (r.type === "transport") bytes += r.bytesReceived ?? 0;
      });
    } catch {
      return; // closed meanwhile
    }
    if (pc !== this.pc) return;
    const now = Date.now();
    if (bytes > this.bytes && this.bytes >= 0) {
      this.changes.push(now);
      if (this.changes.length > 8) this.changes.shift();
      if (this.stalled) {
        this.stalled = false;
        this.onClear();
      }
    }
    this.bytes = Math.max(bytes, this.bytes);
    const last = this.changes.at(-1);
    if (this.stalled || last === undefined || now - last < STALL_MS) return;
    const steady = this.changes.filter((t) => last - t <= 1000).length >= STEADY_SAMPLES;
    if (!steady) return;
    this.stalled = true;
    this.onStall();
  }
}
