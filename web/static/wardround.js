// The ward round's panel: the current bed and the next (`agenda`), the floor (`floor`): who
// has it, whether this page is held (muted by the server until given the floor), a raise-
// hand button, and for the attending (permission `floor`) the raised hands with "give
// floor", "take floor", "mute all but me" and "next bed". The bedside participant's tile is
// shown large (the spotlight layout). Everything is enforced by the server; this page only
// asks. Names and bed texts are set with textContent only.

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
  constructor({ t, send, self, participants, grid, toasts, permissions }) {
    this.t = t;
    this.send = send;
    this.self = self;
    this.participants = participants;
    this.grid = grid;
    this.toasts = toasts;
    this.permissions = permissions;
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
    this.render();
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
    container.classList.toggle("spotlight", Boolean(bedside && this.grid.tiles.has(bedside)));
    for (const [id, tile] of this.grid.tiles) {
      tile.root.classList.toggle("tile-spotlight", id === bedside);
    }
  }
}
