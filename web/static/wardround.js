// The ward round's panel: the current bed and the next (`agenda`), the floor (`floor`): who
// has it, whether this page is held (muted by the server until given the floor), a raise-
// hand button, and for the attending (permission `floor`) the raised hands with "give
// floor", "take floor", "mute all but me" and "next bed". The bedside participant's tile is
// shown large (the spotlight layout). Whoever has the floor (and the attending) may move the
// bedside camera (pan, tilt, zoom); the bedside page says what its camera can do
// (`camera_caps`), applies a `camera_request` with applyConstraints, or refuses when its
// user unticked "let the experts move my camera". Everything is enforced by the server;
// this page only asks. Names and bed texts are set with textContent only.

import { $ } from "./ui.js";

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class WardRound {
  /** @param {{t: Function, send: (msg: object) => boolean, self: () => object|null,
   *           participants: object, grid: object, toasts: object,
   *           permissions: () => string[]}} opts */
  constructor({ t, send, self, participants, grid, toasts, permissions, localVideo }) {
    this.t = t;
    this.send = send;
    this.self = self;
    this.participants = participants;
    this.grid = grid;
    this.toasts = toasts;
    this.permissions = permissions;
    this.localVideo = localVideo;
    this.panel = $("ward-panel");
    // For tests: what this page was told last.
    this.state = { agenda: null, floor: null };
    if (!this.panel) return;
    this.handBtn = $("ward-hand-btn");
    this.handBtn.addEventListener("click", () => {
      this.send({ type: this.raised() ? "lower_hand" : "raise_hand" });
    });
    $("ward-next-btn").addEventListener("click", () => this.send({ type: "agenda_next" }));
    $("ward-mute-all-btn").addEventListener("click", () => this.send({ type: "mute_all_but_me" }));
    for (const btn of $("ward-camera").querySelectorAll("button[data-axis]")) {
      btn.addEventListener("click", () => this.moveCamera(btn.dataset.axis, Number(btn.dataset.step)));
    }
    $("ward-take-btn").addEventListener("click", () => {
      const holder = this.state.floor?.holder;
      if (holder) this.send({ type: "take_floor", participantId: holder });
    });
  }

  get enabled() {
    return Boolean(this.panel);
  }

  leads() {
    return this.permissions().includes("floor");
  }

  raised() {
    const me = this.self()?.id;
    return Boolean(me && this.state.floor?.hands?.includes(me));
  }

  nameOf(id) {
    return this.participants[id]?.name || this.t("role.unknown");
  }

  /** A new session: the server sends `floor` and `agenda` again at once. */
  joined() {
    if (!this.enabled) return;
    this.panel.hidden = false;
    $("ward-lead").hidden = !this.leads();
    const publishes = this.permissions().includes("publish");
    this.handBtn.hidden = this.leads() || !publishes;
    this.sendCameraCaps();
    this.render();
  }

  // ---------------------------------------------------------------- far-end camera

  /** What this page's camera can move (a PTZ webcam, a phone's zoom), told to the server. */
  cameraCaps() {
    const track = this.localVideo();
    const caps = track?.getCapabilities?.() ?? {};
    return { pan: "pan" in caps, tilt: "tilt" in caps, zoom: "zoom" in caps };
  }

  sendCameraCaps() {
    const caps = this.cameraCaps();
    $("ward-camera-allow-label").hidden = !(caps.pan || caps.tilt || caps.zoom);
    this.send({ type: "camera_caps", ...caps });
  }

  moveCamera(axis, step) {
    const bedside = this.state.floor?.bedside;
    if (bedside) this.send({ type: "camera_control", participantId: bedside, [axis]: step });
  }

  /** `camera_request`, to the bedside: apply it, or say why not. */
  async onCameraRequest(msg) {
    const answer = (applied, reason) =>
      this.send({ type: "camera_result", requestId: msg.requestId, applied, ...(reason ? { reason } : {}) });
    if (!$("ward-camera-allow")?.checked) return answer(false, "refused");
    const track = this.localVideo();
    const caps = track?.getCapabilities?.() ?? {};
    const settings = track?.getSettings?.() ?? {};
    const advanced = {};
    for (const axis of ["pan", "tilt", "zoom"]) {
      if (msg[axis] == null) continue;
      const range = caps[axis];
      if (!range) return answer(false, "unsupported");
      const step = range.step || (range.max - range.min) / 20;
      const now = settings[axis] ?? range.min;
      advanced[axis] = Math.min(range.max, Math.max(range.min, now + msg[axis] * step));
    }
    try {
      await track.applyConstraints({ advanced: [advanced] });
      return answer(true);
    } catch (err) {
      console.warn("teleconsult: camera move failed:", err?.name);
      return answer(false, "failed");
    }
  }

  /** `camera_result`, to whoever asked. */
  onCameraResult(msg) {
    const key = msg.applied ? "ward.camera.moved" : `ward.camera.${msg.reason === "refused" ? "refused" : "failed"}`;
    this.toasts.show(this.t(key), msg.applied ? {} : { kind: "warn" });
  }

  /** `agenda`: the current bed and the next. */
  onAgenda(msg) {
    this.state.agenda = msg;
    if (!this.enabled) return;
    const current = $("ward-current");
    const ref = $("ward-ref");
    const note = $("ward-note");
    if (msg.current) current.textContent = this.t("ward.current", { label: msg.current.label });
    else if (msg.done) current.textContent = this.t("ward.done");
    else if (!msg.total) current.textContent = this.t("ward.no_agenda");
    else current.textContent = this.t("ward.not_started");
    ref.hidden = !msg.current?.patientRef;
    ref.textContent = msg.current?.patientRef
      ? this.t("ward.ref", { ref: msg.current.patientRef })
      : "";
    note.hidden = !msg.current?.note;
    note.textContent = msg.current?.note ?? "";
    let next = "";
    if (msg.next) next = this.t("ward.next", { label: msg.next.label });
    else if (msg.current) next = this.t("ward.no_next");
    $("ward-next").textContent = next;
    $("ward-position").textContent = msg.position
      ? this.t("ward.position", { position: msg.position, total: msg.total })
      : "";
    $("ward-next-btn").disabled = msg.done || !msg.total;
  }

  /** `floor`: who has it, the raised hands, who is held, the bedside. */
  onFloor(msg) {
    const before = this.state.floor;
    this.state.floor = msg;
    if (!this.enabled) return;
    const me = this.self()?.id;
    if (me && before) {
      if (msg.holder === me && before.holder !== me) this.toasts.show(this.t("ward.given"));
      if (before.holder === me && msg.holder !== me) this.toasts.show(this.t("ward.taken"));
    }
    if (this.leads() && before) {
      for (const id of msg.hands ?? []) {
        if (!(before.hands ?? []).includes(id)) {
          this.toasts.show(this.t("ward.hand_raised", { name: this.nameOf(id) }));
        }
      }
    }
    this.render();
  }

  /** Someone joined or left: the tiles changed, the spotlight may have to move. */
  refresh() {
    if (this.enabled) this.spotlight();
  }

  render() {
    const floor = this.state.floor;
    if (!floor) return;
    const me = this.self()?.id;
    $("ward-floor-state").textContent = floor.holder
      ? this.t("ward.floor", { name: this.nameOf(floor.holder) })
      : this.t("ward.nobody");
    $("ward-held").hidden = !(me && floor.held?.includes(me));
    const raised = this.raised();
    this.handBtn.textContent = this.t(raised ? "ward.lower_hand" : "ward.raise_hand");
    this.handBtn.setAttribute("aria-pressed", String(raised));
    this.handBtn.classList.toggle("active", raised);
    this.handBtn.disabled = floor.holder === me;
    $("ward-take-btn").hidden = !floor.holder;
    $("ward-camera").hidden = !(
      floor.bedside &&
      floor.bedside !== me &&
      (floor.holder === me || this.leads())
    );
    const list = $("ward-hands");
    list.replaceChildren();
    if (!floor.hands?.length) list.appendChild(el("li", "ward-no-hands", this.t("ward.no_hands")));
    for (const id of floor.hands ?? []) {
      const li = el("li", "ward-hand");
      li.dataset.participantId = id;
      li.appendChild(el("span", "ward-hand-name", this.nameOf(id)));
      const give = el("button", "btn btn-primary ward-give", this.t("ward.give"));
      give.type = "button";
      give.addEventListener("click", () => this.send({ type: "give_floor", participantId: id }));
      li.appendChild(give);
      list.appendChild(li);
    }
    this.spotlight();
  }

  /** The bedside's tile large, the others small. */
  spotlight() {
    const bedside = this.state.floor?.bedside ?? null;
    const container = this.grid.container;
    container.classList.toggle("ward-spotlight", Boolean(bedside && this.grid.tiles.has(bedside)));
    for (const [id, tile] of this.grid.tiles) {
      tile.root.classList.toggle("tile-bedside", id === bedside);
    }
  }
}
