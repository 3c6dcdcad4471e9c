// Low-bandwidth mode, the browser side: choose what video to receive (everyone's, only the
// person speaking, none), shown on the controls; the server enforces it (its media Worker
// stops forwarding) and says what it applied (`video_policy`). The page watches getStats()
// and, when a lot is being lost (over 10 % of packets over 10 s) or the link says it can
// take very little, proposes sound only with a toast and a button; it never switches alone.

import { $ } from "./ui.js";

const CHECK_EVERY_MS = 2000;
const WINDOW_MS = 10000;
const HEAVY_LOSS = 0.1;
const MIN_PACKETS = 200;
const LOW_BITRATE_BPS = 150000;
const PROPOSE_AGAIN_MS = 120000;
const BUTTON_KEYS = {
  all: "video_mode.button",
  speaker: "video_mode.button_speaker",
  audio_only: "video_mode.button_audio_only",
};

export class VideoModeUi {
  /** @param {{t: Function, send: (msg: object) => boolean, toasts: object, grid: object,
   *           pc: () => RTCPeerConnection|null}} opts */
  constructor({ t, send, toasts, grid, pc }) {
    Object.assign(this, { t, send, toasts, grid, pc });
    /** What tests read: the mode the server applied, and whose video it forwards. */
    this.state = { mode: "all", showing: null, proposed: 0, loss: null };
    this.dialog = $("video-mode-dialog");
    this.button = $("video-mode-btn");
    this.samples = [];
    this.proposedAt = -Infinity;
    this.timer = null;
    this.button.addEventListener("click", () => this.dialog.showModal());
    $("video-mode-close").addEventListener("click", () => this.dialog.close());
    for (const choice of this.dialog.querySelectorAll("[data-mode]")) {
      choice.addEventListener("click", () => {
        this.dialog.close();
        this.choose(choice.dataset.mode);
      });
    }
    this.render();
  }

  choose(mode) {
    this.send({ type: "video_policy", mode });
  }

  /** `video_policy`: what the server applies now. */
  onPolicy(msg) {
    const changed = msg.mode !== this.state.mode;
    this.state.mode = msg.mode;
    this.state.showing = msg.showing ?? null;
    this.render();
    if (changed) this.toasts.show(this.t(`video_mode.now_${msg.mode}`));
  }

  /** Every remote tile shows video only if this mode lets it through. */
  render() {
    const { mode, showing } = this.state;
    this.button.textContent = this.t(BUTTON_KEYS[mode] ?? BUTTON_KEYS.all);
    this.button.classList.toggle("active", mode !== "all");
    for (const [id, tile] of this.grid.tiles) {
      if (tile.self) continue;
      this.grid.setWithheld(id, mode === "audio_only" || (mode === "speaker" && id !== showing));
    }
  }

  /** A new session: the server starts it with everyone's video; ask again for ours. */
  rejoined() {
    if (this.state.mode !== "all") this.choose(this.state.mode);
  }

  start() {
    if (this.timer === null) this.timer = setInterval(() => this.check(), CHECK_EVERY_MS);
  }

  stop() {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.samples = [];
  }

  async check() {
    const pc = this.pc();
    if (!pc) return;
    let lost = 0;
    let received = 0;
    let available = null;
    try {
      const report = await pc.getStats();
      report.forEach((r) => {
        if (r.type === "inbound-rtp") {
          lost += Math.max(0, r.packetsLost ?? 0);
          received += r.packetsReceived ?? 0;
        } else if (r.type === "candidate-pair" && r.nominated && r.availableIncomingBitrate) {
          available = r.availableIncomingBitrate;
        }
      });
    } catch {
      return;
    }
    this.sample(lost, received, available, Date.now());
  }

  /** One reading of the cumulative counters (also the tests' way in). */
  sample(lost, received, available, now) {
    this.samples.push({ lost, received, at: now });
    while (this.samples.length > 1 && now - this.samples[0].at > WINDOW_MS) this.samples.shift();
    const first = this.samples[0];
    const dLost = lost - first.lost;
    const dReceived = received - first.received;
    const total = dLost + dReceived;
    this.state.loss = total > 0 ? dLost / total : null;
    const heavyLoss =
      now - first.at >= WINDOW_MS * 0.8 && total >= MIN_PACKETS && dLost / total > HEAVY_LOSS;
    const starved = available !== null && available < LOW_BITRATE_BPS;
    if ((heavyLoss || starved) && this.state.mode !== "audio_only") this.propose();
  }

  propose() {
    const now = Date.now();
    if (now - this.proposedAt < PROPOSE_AGAIN_MS) return;
    this.proposedAt = now;
    this.state.proposed += 1;
    this.toasts.show(this.t("video_mode.propose"), {
      kind: "warn",
      ms: 20000,
      action: { label: this.t("video_mode.propose_button"), onClick: () => this.choose("audio_only") },
    });
  }
}
