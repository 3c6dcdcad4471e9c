// Consent-gated recording, the browser side (docs/protocol.md, "Recording").
//
// - Whoever holds the `record` permission (the doctor) gets Record / Cancel / Stop.
// - `consent_request` opens a modal with large Yes / No buttons (extra large in kiosk mode);
//   the answer goes back as `consent`. It cannot be dismissed with Escape: no answer is
//   taken for a yes or a no.
// - While recording, a red REC indicator with the elapsed time shows on every client; a
//   participant who is recorded can withdraw ("Stop recording me"), one who is left out can
//   still agree ("Record me too").
// - Toasts for a refusal, a cancelled request, and a stop with a reason (disk_full, error).
//
// Test hook: window.teleconsult.state.recording (see `newRecordingState`).

import { $ } from "./ui.js";

const HISTORY_MAX = 50;

export function newRecordingState() {
  return {
    state: "idle", // idle | pending | recording | stopped (the server's last `recording`)
    recordingId: null,
    waitingFor: [], // pending: participant ids that have not answered
    excluded: [], // recording: participant ids left out (no consent)
    reason: null,
    requestedBy: null, // participant id of the requester, when known
    dialog: false, // the consent dialog is open
    myConsent: null, // null (not asked / not answered) | true | false
    startedAt: null, // Date.now() when this client saw `recording` start
    stoppedAt: null, // Date.now() when this client saw it stop
    history: [], // every state seen, oldest first (bounded)
  };
}

export class RecordingUi {
  /**
   * @param {{t: Function, state: object, participants: object, toasts: object,
   *          send: (msg: object) => boolean, onStopped?: () => void}} opts
   */
  constructor({ t, state, participants, toasts, send, onStopped }) {
    this.t = t;
    this.state = state; // the app state: self, permissions, recording
    this.rec = state.recording;
    this.participants = participants;
    this.toasts = toasts;
    this.send = send;
    this.onStopped = onStopped;
    this.busy = false; // a record request is on its way
    this.timer = null;

    this.dialog = $("consent-dialog");
    this.indicator = $("rec-indicator");
    this.pending = $("rec-pending");
    this.recordBtn = $("record-btn");
    this.withdrawBtn = $("withdraw-btn");

    $("consent-yes").addEventListener("click", () => this.answer(true));
    $("consent-no").addEventListener("click", () => this.answer(false));
    // Escape would close the modal without an answer: keep it open.
    this.dialog.addEventListener("cancel", (ev) => ev.preventDefault());
    this.recordBtn.addEventListener("click", () => this.toggleRecording());
    this.withdrawBtn.addEventListener("click", () => this.withdrawOrRejoin());
  }

  get selfId() {
    return this.state.self?.id ?? null;
  }

  canRecord() {
    return this.state.permissions.includes("record");
  }

  name(id) {
    const p = this.participants[id];
    if (!p) return this.t("role.unknown");
    if (p.name) return p.name;
    const role = this.t(`role.${p.role}`);
    return role === `role.${p.role}` ? this.t("role.unknown") : role;
  }

  // ------------------------------------------------------------ messages

  onConsentRequest(msg) {
    const r = this.rec;
    if (r.recordingId !== msg.recordingId) r.myConsent = null;
    r.recordingId = msg.recordingId;
    r.requestedBy = msg.requestedBy;
    this.openDialog();
  }

  onState(msg) {
    const r = this.rec;
    const prev = r.state;
    r.state = msg.state;
    r.recordingId = msg.recordingId ?? r.recordingId;
    r.waitingFor = msg.waitingFor ?? [];
    r.excluded = msg.excluded ?? [];
    r.reason = msg.reason ?? null;
    r.history.push(msg.state);
    if (r.history.length > HISTORY_MAX) r.history.shift();
    this.busy = false;

    if (msg.state === "recording" && prev !== "recording") {
      // The server's start time, so a late joiner's timer shows the real duration.
      r.startedAt = msg.startedAt ? msg.startedAt * 1000 : Date.now();
      r.stoppedAt = null;
    }
    if (prev === "recording" && msg.state !== "recording") {
      r.stoppedAt = Date.now();
    }
    if (msg.state === "idle" || msg.state === "stopped") {
      // The request is over (cancelled, refused, stopped): an open question is moot.
      const asking = r.dialog;
      this.closeDialog();
      this.announceEnd(asking && prev !== "recording" ? "pending" : prev, msg);
      r.myConsent = null;
      if (prev === "recording") this.onStopped?.();
    }
    this.render();
  }

  /** An `error` from the server; true if it was about recording and has been shown. */
  onError(msg) {
    if (msg.ref === "record" || msg.ref === "consent") this.busy = false;
    if (msg.code === "consent_refused") {
      const id = msg.participantId;
      const who = id && this.participants[id] ? this.name(id) : null;
      const text = who
        ? this.t("recording.refused_by", { name: who })
        : this.t("error.consent_refused");
      this.toasts.show(text, { kind: "error", ms: 8000 });
      this.render();
      return true;
    }
    this.render();
    return false;
  }

  announceEnd(prev, msg) {
    const reason = msg.reason ?? "";
    if (prev === "pending" && msg.state === "idle") {
      if (reason === "declined") {
        // The requester hears it from the consent_refused error, with the name.
        if (this.rec.requestedBy !== this.selfId) {
          this.toasts.show(this.t("recording.declined"), { kind: "error", ms: 8000 });
        }
        return;
      }
      const key = `recording.reason.${reason}`;
      if (this.t(key) !== key) this.toasts.show(this.t(key), { kind: "error", ms: 8000 });
      return;
    }
    if (prev === "recording") {
      const key = `recording.reason.${reason}`;
      const known = this.t(key) !== key;
      this.toasts.show(known ? this.t(key) : this.t("recording.stopped"), {
        kind: known ? "error" : "info",
        ms: known ? 12000 : 5000,
      });
    }
  }

  // ------------------------------------------------------------ actions

  toggleRecording() {
    if (!this.canRecord() || this.busy) return;
    const s = this.rec.state;
    const action = s === "pending" || s === "recording" ? "stop" : "start";
    if (!this.send({ type: "record", action })) return;
    if (action === "start") {
      this.rec.requestedBy = this.selfId;
      this.rec.myConsent = true; // asking is the requester's own consent
    }
    this.busy = true;
    this.render();
  }

  answer(granted) {
    this.closeDialog();
    this.rec.myConsent = granted;
    this.send({ type: "consent", granted });
    this.render();
  }

  withdrawOrRejoin() {
    if (this.rec.state !== "recording") return;
    if (this.isExcluded()) {
      this.openDialog();
      return;
    }
    this.rec.myConsent = false;
    this.send({ type: "consent", granted: false });
    this.toasts.show(this.t("recording.withdrawn"));
    this.render();
  }

  isExcluded() {
    return this.selfId !== null && this.rec.excluded.includes(this.selfId);
  }

  openDialog() {
    const r = this.rec;
    $("consent-asked").textContent = r.requestedBy
      ? this.t("consent.asked_by", { name: this.name(r.requestedBy) })
      : "";
    $("consent-body").textContent = this.t(
      r.state === "recording" ? "consent.body_running" : "consent.body",
    );
    r.dialog = true;
    if (!this.dialog.open) {
      try {
        this.dialog.showModal();
      } catch {
        this.dialog.setAttribute("open", ""); // an engine without modal dialogs
      }
    }
    $("consent-yes").focus();
  }

  closeDialog() {
    this.rec.dialog = false;
    if (this.dialog.open) this.dialog.close();
  }

  /** The call is over (left, ended, reconnecting): no REC, no question. */
  reset() {
    this.closeDialog();
    const fresh = newRecordingState();
    fresh.history = this.rec.history;
    Object.assign(this.rec, fresh);
    this.busy = false;
    this.render();
  }

  // ------------------------------------------------------------ rendering

  render() {
    const r = this.rec;
    const recording = r.state === "recording";
    this.indicator.hidden = !recording;
    this.indicator.dataset.state = r.state;
    $("rec-note").hidden = !(recording && this.isExcluded());
    document.body.classList.toggle("is-recording", recording);

    const waiting = r.state === "pending" && r.waitingFor.length > 0;
    this.pending.hidden = !waiting;
    if (waiting) {
      const names = r.waitingFor
        .map((id) => (id === this.selfId ? this.t("call.you", { name: this.name(id) }) : this.name(id)))
        .join(", ");
      this.pending.textContent = this.t("recording.pending", { names });
    }

    if (this.canRecord() && this.state.self) {
      this.recordBtn.hidden = false;
      const key =
        r.state === "recording"
          ? "recording.stop"
          : r.state === "pending"
            ? "recording.cancel"
            : "recording.start";
      this.recordBtn.textContent = this.t(key);
      this.recordBtn.dataset.action = r.state === "pending" || recording ? "stop" : "start";
      this.recordBtn.classList.toggle("active", r.state === "pending" || recording);
      this.recordBtn.disabled = this.busy;
    } else {
      this.recordBtn.hidden = true;
    }

    // The requester stops the whole recording instead; everyone else can leave it.
    const mine = this.selfId !== null && r.requestedBy === this.selfId;
    this.withdrawBtn.hidden = !recording || mine || this.state.media === "observer";
    this.withdrawBtn.textContent = this.t(
      this.isExcluded() ? "recording.include_me" : "recording.withdraw",
    );
    this.withdrawBtn.dataset.action = this.isExcluded() ? "include" : "withdraw";

    if (recording && this.timer === null) {
      this.timer = setInterval(() => this.tick(), 1000);
    } else if (!recording && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    this.tick();
  }

  tick() {
    const r = this.rec;
    if (r.state !== "recording" || r.startedAt === null) return;
    const s = Math.max(0, Math.floor((Date.now() - r.startedAt) / 1000));
    const mm = Math.floor(s / 60);
    const ss = String(s % 60).padStart(2, "0");
    $("rec-time").textContent = `${mm}:${ss}`;
  }
}
