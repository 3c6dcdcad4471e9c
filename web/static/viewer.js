// The shared-image viewer: a dialog over the call with zoom and pan (wheel, buttons, drag,
// pinch), a window switcher for DICOM, and the presenter's pointer.
//
// Images go over HTTP with this page's own join token in the Authorization header (the
// server checks we are in the call), never over the signaling socket; they are shown from
// a blob: URL. Zoom, pan and the window are each viewer's own; the pointer is the
// presenter's, sent as fractions of the image (at most ~15 a second), so it lands on the
// same spot of the picture whatever each viewer's zoom.

import { $ } from "./ui.js";

const POINTER_EVERY_MS = 66;
const MIN_SCALE = 0.05;
const MAX_SCALE = 16;
const TAP_SLOP_PX = 6;

export class ImageViewer {
  /** @param {{t: Function, token: string, consultation: () => string,
   *           send: (msg: object) => boolean, self: () => object|null,
   *           nameOf: (id: string) => string, toasts: object,
   *           mayClose: () => boolean}} opts */
  constructor({ t, token, consultation, send, self, nameOf, toasts, mayClose }) {
    // mayClose: whether this page may close someone else's image (the host's `admit`).
    Object.assign(this, { t, token, consultation, send, self, nameOf, toasts, mayClose });
    this.dialog = $("viewer-dialog");
    this.stage = $("viewer-stage");
    this.canvas = $("viewer-canvas");
    // Made on the first share, not in the page: until an image is shown there is none.
    this.img = null;
    this.dot = $("viewer-pointer");
    this.status = $("viewer-status");
    this.presetSelect = $("viewer-preset");
    /** What tests read: the shared image, the window shown, and the pointer. */
    this.state = { imageId: null, preset: null, loaded: 0, pointer: null, by: null, kind: null };
    this.current = null;
    this.view = { scale: 1, tx: 0, ty: 0 };
    this.objectUrl = null;
    this.loading = 0;
    this.pointers = new Map();
    this.lastSent = 0;
    this.pending = null;
    this.wire();
  }

  wire() {
    $("viewer-close").addEventListener("click", () => this.dialog.close());
    $("viewer-stop").addEventListener("click", () => this.send({ type: "unshare" }));
    $("viewer-fit").addEventListener("click", () => this.fit());
    $("viewer-zoom-in").addEventListener("click", () => this.zoomAt(1.25));
    $("viewer-zoom-out").addEventListener("click", () => this.zoomAt(0.8));
    this.presetSelect.addEventListener("change", () => this.load(this.presetSelect.value));
    this.stage.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      this.zoomAt(ev.deltaY < 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY);
    }, { passive: false });
    this.stage.addEventListener("pointerdown", (ev) => this.down(ev));
    this.stage.addEventListener("pointermove", (ev) => this.move(ev));
    this.stage.addEventListener("pointerup", (ev) => this.up(ev));
    this.stage.addEventListener("pointercancel", (ev) => this.up(ev));
    this.stage.addEventListener("pointerleave", (ev) => {
      if (ev.pointerType === "mouse" && this.presenting()) this.sendPointer(null);
    });
    // The stage changes size with the window and when the chat opens or closes beside it.
    new ResizeObserver(() => this.dialog.open && this.fit()).observe(this.stage);
  }

  presenting() {
    return Boolean(this.current && this.current.by === this.self()?.id);
  }

  // ------------------------------------------------------------------ sharing

  /** Upload `file` and show it to everyone. */
  async share(file) {
    this.toasts.show(this.t("share.uploading"));
    const body = new FormData();
    body.append("file", file, "image");
    let resp;
    try {
      resp = await fetch(this.api(""), {
        method: "POST",
        headers: { Authorization: `Bearer ${this.token}` },
        body,
        cache: "no-store",
      });
    } catch {
      this.refused(null);
      return;
    }
    let answer = null;
    try {
      answer = await resp.json();
    } catch {
      // a plain-text refusal (401, 403, 413)
    }
    if (resp.status !== 201 || !answer?.id) {
      this.refused(resp.status === 413 ? { error: "too_large" } : answer);
      return;
    }
    this.send({ type: "share", imageId: answer.id });
  }

  refused(answer) {
    const key = `share.error.${answer?.error}`;
    const known = this.t(key);
    const reason = known !== key ? known : answer?.message || this.t("viewer.load_failed");
    this.toasts.show(this.t("share.failed", { reason }), { kind: "error", ms: 9000 });
  }

  picture() {
    if (!this.img) {
      this.img = document.createElement("img");
      this.img.id = "viewer-img";
      this.img.alt = this.t("viewer.image_alt");
      this.img.draggable = false;
      this.img.addEventListener("load", () => {
        this.state.loaded += 1;
        this.status.textContent = "";
        this.fit();
      });
      this.canvas.prepend(this.img);
    }
    return this.img;
  }

  /** `share`: what everyone is shown now. */
  onShare(msg) {
    this.picture();
    const fresh = this.current?.imageId !== msg.imageId;
    this.current = msg;
    Object.assign(this.state, { imageId: msg.imageId, by: msg.by, kind: msg.kind, pointer: null });
    this.dot.hidden = true;
    $("viewer-by").textContent = this.t("viewer.by", { name: this.nameOf(msg.by) });
    $("viewer-stop").hidden = !(this.presenting() || this.mayClose());
    const dicom = msg.kind === "dicom" && msg.presets.length > 1;
    $("viewer-preset-label").hidden = !dicom;
    this.presetSelect.replaceChildren();
    for (const preset of msg.presets) {
      const option = document.createElement("option");
      option.value = preset;
      const label = this.t(`preset.${preset}`);
      option.textContent = label === `preset.${preset}` ? preset : label;
      this.presetSelect.appendChild(option);
    }
    this.presetSelect.value = msg.preset;
    $("viewer-info").textContent = this.describe(msg.info);
    // Not modal: the chat and the call's controls stay usable beside it.
    if (!this.dialog.open) this.dialog.show();
    if (fresh || this.state.preset !== msg.preset) this.load(msg.preset);
  }

  describe(info) {
    if (!info) return "";
    const parts = [info.modality, info.bodyPart].filter(Boolean);
    if (info.sliceThickness) parts.push(this.t("viewer.thickness", { mm: info.sliceThickness }));
    if (info.frames > 1) parts.push(this.t("viewer.frames", { count: info.frames }));
    return parts.join(" · ");
  }

  onShareEnded(msg) {
    if (this.current?.imageId !== msg.imageId) return;
    this.current = null;
    Object.assign(this.state, { imageId: null, by: null, kind: null, pointer: null });
    if (this.dialog.open) this.dialog.close();
  }

  /** Open again after closing it, while the image is still shown. */
  reopen() {
    if (this.current && !this.dialog.open) this.dialog.show();
  }

  /** `pointer`: the presenter's, as fractions of the image (absent: hidden). */
  onPointer(msg) {
    if (!this.current || msg.participantId !== this.current.by) return;
    const shown = typeof msg.x === "number" && typeof msg.y === "number";
    this.state.pointer = shown ? { x: msg.x, y: msg.y } : null;
    this.placeDot();
  }

  /** A new session: the server says again what is shown. */
  reset() {
    this.current = null;
    Object.assign(this.state, { imageId: null, by: null, kind: null, pointer: null });
    if (this.dialog.open) this.dialog.close();
  }

  // ------------------------------------------------------------------ loading

  api(path) {
    return `/api/consultations/${encodeURIComponent(this.consultation())}/images${path}`;
  }

  async load(preset) {
    if (!this.current) return;
    const image = this.current.imageId;
    const attempt = ++this.loading;
    this.state.preset = preset;
    this.status.textContent = this.t("viewer.loading");
    try {
      const resp = await fetch(
        this.api(`/${encodeURIComponent(image)}/${encodeURIComponent(preset)}`),
        { headers: { Authorization: `Bearer ${this.token}` }, cache: "no-store" },
      );
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const blob = await resp.blob();
      if (attempt !== this.loading) return; // a newer load won
      if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = URL.createObjectURL(blob);
      this.picture().src = this.objectUrl;
    } catch (err) {
      console.warn("teleconsult: loading the shared image failed", err?.message);
      if (attempt === this.loading) this.status.textContent = this.t("viewer.load_failed");
    }
  }

  // ------------------------------------------------------------------ zoom and pan

  fit() {
    if (!this.img) return;
    const w = this.img.naturalWidth;
    const h = this.img.naturalHeight;
    const box = this.stage.getBoundingClientRect();
    if (!w || !h || !box.width || !box.height) return;
    const scale = Math.min(box.width / w, box.height / h);
    this.view = { scale, tx: (box.width - w * scale) / 2, ty: (box.height - h * scale) / 2 };
    this.apply();
  }

  zoomAt(factor, clientX, clientY) {
    const box = this.stage.getBoundingClientRect();
    const x = (clientX ?? box.left + box.width / 2) - box.left;
    const y = (clientY ?? box.top + box.height / 2) - box.top;
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.view.scale * factor));
    const k = scale / this.view.scale;
    this.view = { scale, tx: x - (x - this.view.tx) * k, ty: y - (y - this.view.ty) * k };
    this.apply();
  }

  apply() {
    if (!this.img) return;
    const { scale, tx, ty } = this.view;
    this.canvas.style.width = `${this.img.naturalWidth}px`;
    this.canvas.style.height = `${this.img.naturalHeight}px`;
    this.canvas.style.transform = `translate(${tx}px, ${ty}px) scale(${scale})`;
    this.dot.style.setProperty("--inverse-scale", String(1 / scale));
    this.state.scale = scale;
    this.placeDot();
  }

  placeDot() {
    const p = this.state.pointer;
    this.dot.hidden = !p || !this.img;
    if (!p || !this.img) return;
    this.dot.style.left = `${p.x * this.img.naturalWidth}px`;
    this.dot.style.top = `${p.y * this.img.naturalHeight}px`;
  }

  /** Where a client point falls on the image, as fractions; null outside it. */
  fraction(clientX, clientY) {
    if (!this.img) return null;
    const box = this.stage.getBoundingClientRect();
    const { scale, tx, ty } = this.view;
    const x = (clientX - box.left - tx) / scale / this.img.naturalWidth;
    const y = (clientY - box.top - ty) / scale / this.img.naturalHeight;
    return x >= 0 && x <= 1 && y >= 0 && y <= 1 ? { x, y } : null;
  }

  down(ev) {
    this.stage.setPointerCapture(ev.pointerId);
    this.pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY, startX: ev.clientX, startY: ev.clientY });
  }

  move(ev) {
    const p = this.pointers.get(ev.pointerId);
    if (!p) {
      // Hovering (a mouse, no button): the presenter points.
      if (this.presenting() && ev.pointerType === "mouse") this.point(ev.clientX, ev.clientY);
      return;
    }
    if (this.pointers.size === 2) {
      const [a, b] = [...this.pointers.values()];
      const before = Math.hypot(a.x - b.x, a.y - b.y);
      p.x = ev.clientX;
      p.y = ev.clientY;
      const after = Math.hypot(a.x - b.x, a.y - b.y);
      if (before > 0) this.zoomAt(after / before, (a.x + b.x) / 2, (a.y + b.y) / 2);
      return;
    }
    this.view.tx += ev.clientX - p.x;
    this.view.ty += ev.clientY - p.y;
    p.x = ev.clientX;
    p.y = ev.clientY;
    this.apply();
  }

  up(ev) {
    const p = this.pointers.get(ev.pointerId);
    this.pointers.delete(ev.pointerId);
    // A tap (a finger cannot hover): the presenter points there.
    if (p && this.presenting() && Math.hypot(ev.clientX - p.startX, ev.clientY - p.startY) < TAP_SLOP_PX) {
      this.point(ev.clientX, ev.clientY);
    }
  }

  point(clientX, clientY) {
    const at = this.fraction(clientX, clientY);
    this.state.pointer = at;
    this.placeDot();
    this.sendPointer(at);
  }

  /** At most one every POINTER_EVERY_MS; the last position is never lost. */
  sendPointer(at) {
    this.pending = at;
    const wait = this.lastSent + POINTER_EVERY_MS - Date.now();
    if (wait > 0) {
      if (!this.timer) this.timer = setTimeout(() => this.flushPointer(), wait);
      return;
    }
    this.flushPointer();
  }

  flushPointer() {
    this.timer = null;
    this.lastSent = Date.now();
    const at = this.pending;
    this.send(at ? { type: "pointer", x: round(at.x), y: round(at.y) } : { type: "pointer" });
  }
}

function round(v) {
  return Math.round(v * 10000) / 10000;
}
