// What the media Worker did to fit incoming video to this browser's link (`video_rate`):
// fewer frames per second, or a still picture every few seconds while sound goes on.
// Shown as a status line naming whose video it is, for as long as it lasts.

import { $ } from "./ui.js";

export class VideoRateUi {
  /** @param {{t: Function, nameOf: (participantId: string) => string}} opts */
  constructor({ t, nameOf }) {
    Object.assign(this, { t, nameOf });
    /** What tests read: participantId -> "full" | "reduced" | "stills". */
    this.modes = {};
    this.el = $("video-rate-notice");
  }

  onRate(msg) {
    if (msg.mode === "full") delete this.modes[msg.participantId];
    else this.modes[msg.participantId] = msg.mode;
    this.render();
  }

  render() {
    const lines = Object.entries(this.modes).map(([id, mode]) =>
      this.t(`video_rate.${mode}`, { name: this.nameOf(id) }),
    );
    this.el.textContent = lines.join(" ");
    this.el.hidden = lines.length === 0;
  }
}
