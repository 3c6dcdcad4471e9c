// The recordings panel of whoever may see recordings (the doctor, experts): list this
// consultation's recordings, have the composed video made, follow its progress, play it or
// download it. Everything goes through the recordings HTTP API with the page's own join
// token (Authorization header for fetch; `?token=` for the <video>, which cannot send
// headers). The server checks the permission and writes every access to the audit log.

import { $ } from "./ui.js";

const POLL_MS = 1000;

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export class RecordingsPanel {
  /** @param {{t: Function, token: string, consultation: () => string|null, lang: string}} opts */
  constructor({ t, token, consultation, lang }) {
    this.t = t;
    this.token = token;
    this.consultation = consultation;
    this.lang = lang;
    this.dialog = $("recordings-dialog");
    this.list = $("recordings-list");
    this.status = $("recordings-status");
    this.player = $("recordings-player");
    /** recording id -> {timer, state, progress} */
    this.jobs = new Map();
    $("recordings-close").addEventListener("click", () => this.close());
    this.dialog.addEventListener("close", () => this.player.pause());
  }

  base() {
    return `/api/consultations/${encodeURIComponent(this.consultation())}/recordings`;
  }

  async api(path, { method = "GET" } = {}) {
    const resp = await fetch(this.base() + path, {
      method,
      headers: { Authorization: `Bearer ${this.token}` },
      cache: "no-store",
    });
    if (!resp.ok) {
      const err = new Error(`HTTP ${resp.status}`);
      err.status = resp.status;
      throw err;
    }
    return resp.json();
  }

  mediaUrl(recording, { download = false } = {}) {
    const q = new URLSearchParams({ token: this.token });
    if (download) q.set("download", "1");
    return `${this.base()}/${encodeURIComponent(recording)}/composed?${q}`;
  }

  open() {
    if (!this.dialog.open) this.dialog.showModal();
    return this.refresh();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  /** Reload the list (also called when a recording stops, if the panel is open). */
  async refresh() {
    this.status.textContent = this.t("recordings.loading");
    let data;
    try {
      data = await this.api("");
    } catch (err) {
      this.status.textContent = this.t("recordings.load_failed", { status: err.status ?? "?" });
      return;
    }
    const items = data.recordings ?? [];
    this.status.textContent = items.length ? "" : this.t("recordings.none");
    this.list.replaceChildren(...items.map((info) => this.item(info)));
    for (const info of items) {
      // A job started earlier (by us or anyone) is picked up again.
      if (!info.composed) this.poll(info.recording, { quiet: true });
    }
  }

  item(info) {
    const li = el("li", "rec-item");
    li.dataset.recording = info.recording;
    const when = info.started_at ? new Date(info.started_at * 1000) : null;
    const head = el("div", "rec-item-head");
    head.append(
      el("span", "rec-item-when", when ? when.toLocaleString(this.lang) : info.recording),
    );
    if (info.started_at && info.stopped_at) {
      head.append(el("span", "rec-item-duration", clock(info.stopped_at - info.started_at)));
    }
    const stateKey = `recordings.state.${info.state}`;
    const stateText = this.t(stateKey) === stateKey ? info.state : this.t(stateKey);
    head.append(el("span", "rec-item-state", stateText));
    if (info.truncated && info.state !== "recording") {
      head.append(el("span", "rec-item-state warn", this.t("recordings.truncated")));
    }
    li.append(head);

    const actions = el("div", "rec-item-actions");
    const compose = el("button", "btn rec-compose", this.t("recordings.compose"));
    compose.type = "button";
    const progress = el("progress", "rec-progress");
    progress.max = 100;
    progress.value = 0;
    progress.hidden = true;
    const percent = el("span", "rec-percent");
    percent.hidden = true;
    const play = el("button", "btn btn-primary rec-play", this.t("recordings.play"));
    play.type = "button";
    const download = el("a", "btn rec-download", this.t("recordings.download"));
    download.href = this.mediaUrl(info.recording, { download: true });
    download.setAttribute("download", `${info.recording}.mp4`);
    const ready = Boolean(info.composed);
    compose.hidden = ready || !info.tracks;
    play.hidden = !ready;
    download.hidden = !ready;
    compose.addEventListener("click", () => this.compose(info.recording));
    play.addEventListener("click", () => this.play(info.recording));
    actions.append(compose, progress, percent, play, download);
    li.append(actions);
    return li;
  }

  row(recording) {
    for (const li of this.list.children) if (li.dataset.recording === recording) return li;
    return null;
  }

  async compose(recording) {
    const li = this.row(recording);
    li?.querySelector(".rec-compose")?.setAttribute("disabled", "");
    try {
      const job = await this.api(`/${encodeURIComponent(recording)}/compose`, { method: "POST" });
      this.show(recording, job);
      if (job.state === "running") this.poll(recording);
    } catch (err) {
      this.show(recording, { state: "failed", progress: 0 });
      console.warn("teleconsult: compose", recording, err);
    }
  }

  poll(recording, { quiet = false } = {}) {
    if (this.jobs.has(recording)) return;
    const step = async () => {
      let job;
      try {
        job = await this.api(`/${encodeURIComponent(recording)}/compose`);
      } catch (err) {
        this.jobs.delete(recording);
        if (!quiet || err.status !== 404) this.show(recording, { state: "failed", progress: 0 });
        return;
      }
      this.show(recording, job);
      if (job.state === "running") {
        this.jobs.set(recording, setTimeout(step, POLL_MS));
      } else {
        this.jobs.delete(recording);
      }
    };
    this.jobs.set(recording, setTimeout(step, 0));
  }

  show(recording, job) {
    const li = this.row(recording);
    if (!li) return;
    li.dataset.job = job.state;
    const compose = li.querySelector(".rec-compose");
    const progress = li.querySelector(".rec-progress");
    const percent = li.querySelector(".rec-percent");
    const running = job.state === "running";
    const done = job.state === "done";
    const pct = Math.round(Number(job.progress) || 0);
    progress.hidden = !running;
    progress.value = pct;
    percent.hidden = !(running || job.state === "failed");
    percent.textContent = running
      ? this.t("recordings.composing", { percent: pct })
      : this.t("recordings.compose_failed");
    percent.dataset.percent = String(pct);
    compose.hidden = running || done;
    compose.disabled = false;
    li.querySelector(".rec-play").hidden = !done;
    li.querySelector(".rec-download").hidden = !done;
  }

  play(recording) {
    this.player.hidden = false;
    this.player.dataset.recording = recording;
    this.player.src = this.mediaUrl(recording);
    this.player.play().catch(() => {
      // No autoplay with sound without a gesture on some kiosks: the controls remain.
    });
  }
}
