// DOM helpers: translation, tiles, toasts, banner. User-supplied text (display names) only
// ever goes through textContent, never innerHTML.

export function makeTranslator(messages) {
  return (key, params = {}) => {
    const s = Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
    return s.replace(/\{(\w+)\}/g, (m, k) =>
      Object.prototype.hasOwnProperty.call(params, k) ? String(params[k]) : m,
    );
  };
}

export const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

const SVG_NS = "http://www.w3.org/2000/svg";

// Small line icons, drawn here so there is nothing to fetch and no font to depend on.
const ICONS = {
  micOff: [
    "M12 3a3 3 0 0 0-3 3v5a3 3 0 0 0 5.1 2.1",
    "M15 9.3V6a3 3 0 0 0-5.7-1.3",
    "M5 11a7 7 0 0 0 11.5 5.4M19 11a7 7 0 0 1-.7 3",
    "M12 18v3",
    "M3 3l18 18",
  ],
  camOff: [
    "M15 10.5l5-3v9l-5-3",
    "M13.5 17H5a2 2 0 0 1-2-2V9a2 2 0 0 1 2-2h1.5M10 7h3a2 2 0 0 1 2 2v3",
    "M3 3l18 18",
  ],
};

function icon(name, label) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", `icon icon-${name}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const title = document.createElementNS(SVG_NS, "title");
  title.textContent = label;
  svg.appendChild(title);
  for (const d of ICONS[name]) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.appendChild(path);
  }
  return svg;
}

export function roleLabel(t, role) {
  const label = t(`role.${role}`);
  return label === `role.${role}` ? t("role.unknown") : label;
}

/** The grid of participant tiles. */
export class TileGrid {
  constructor(container, t, { onAutoplayBlocked, onRemove } = {}) {
    this.container = container;
    this.t = t;
    this.onAutoplayBlocked = onAutoplayBlocked;
    // Called with a participant id when the host presses Remove on that tile.
    this.onRemove = onRemove;
    this.canRemove = false;
    /** @type {Map<string, object>} */
    this.tiles = new Map();
  }

  /** Create or update the tile of participant `p` ({id, name, role, audioMuted, videoMuted}). */
  upsert(p, { self = false } = {}) {
    let tile = this.tiles.get(p.id);
    if (!tile) {
      const root = el("figure", `tile${self ? " tile-self" : ""}`);
      root.dataset.participantId = p.id;
      const video = el("video", "tile-video");
      video.autoplay = true;
      video.playsInline = true;
      // Self-view is always muted: hearing yourself back is an echo, not a feature.
      video.muted = self;
      const placeholder = el("div", "tile-placeholder");
      const avatar = el("span", "avatar");
      placeholder.appendChild(avatar);
      const caption = el("figcaption", "tile-caption");
      const name = el("span", "tile-name");
      const role = el("span", "role-badge");
      const icons = el("span", "tile-icons");
      const mic = icon("micOff", this.t("call.mic_muted"));
      const cam = icon("camOff", this.t("call.cam_muted"));
      icons.append(mic, cam);
      caption.append(name, role, icons);
      let remove = null;
      if (!self) {
        remove = el("button", "tile-remove", this.t("host.remove"));
        remove.type = "button";
        remove.hidden = !this.canRemove;
        remove.addEventListener("click", () => this.onRemove?.(p.id));
        caption.appendChild(remove);
      }
      root.append(video, placeholder, caption);
      this.container.appendChild(root);
      tile = { root, video, placeholder, avatar, name, role, mic, cam, remove, self, stream: null, key: "" };
      this.tiles.set(p.id, tile);
    }
    const display = p.name || this.t("role.unknown");
    tile.name.textContent = self ? this.t("call.you", { name: display }) : display;
    tile.avatar.textContent = Array.from(display.trim())[0] ?? "?";
    tile.role.textContent = roleLabel(this.t, p.role);
    tile.role.className = `role-badge role-${/^[a-z_]+$/.test(p.role) ? p.role : "unknown"}`;
    this.setMuted(p.id, "audio", Boolean(p.audioMuted));
    this.setMuted(p.id, "video", Boolean(p.videoMuted));
    this._layout();
    return tile;
  }

  /** Show or hide every Remove button (the host's permission, known once joined). */
  setCanRemove(allowed) {
    this.canRemove = allowed;
    for (const tile of this.tiles.values()) if (tile.remove) tile.remove.hidden = !allowed;
  }

  remove(id) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.root.remove();
    this.tiles.delete(id);
    this._layout();
  }

  clearRemote() {
    for (const [id, tile] of this.tiles) if (!tile.self) this.remove(id);
  }

  setMuted(id, kind, muted) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    (kind === "audio" ? tile.mic : tile.cam).classList.toggle("shown", muted);
    tile.root.classList.toggle(kind === "audio" ? "audio-muted" : "video-muted", muted);
    this._placeholder(tile);
  }

  /** Show `tracks` in the tile of `id`; a new MediaStream only when the set changes. */
  setTracks(id, tracks) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    const key = tracks.map((tr) => tr.id).sort().join(",");
    if (key === tile.key) return;
    tile.key = key;
    tile.stream = tracks.length ? new MediaStream(tracks) : null;
    tile.video.srcObject = tile.stream;
    this._placeholder(tile);
    if (tile.stream) this._play(tile);
  }

  setStream(id, stream) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.stream = stream;
    tile.key = stream ? stream.getTracks().map((tr) => tr.id).sort().join(",") : "";
    tile.video.srcObject = stream;
    this._placeholder(tile);
    if (stream) this._play(tile);
  }

  unmuteAll() {
    for (const tile of this.tiles.values()) {
      if (tile.self) continue;
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
  }

  _play(tile) {
    tile.video.play().catch(() => {
      if (tile.self || tile.video.muted) return;
      // No user gesture yet (a kiosk joining by itself): play muted, ask for a tap.
      tile.video.muted = true;
      tile.video.play().catch(() => {});
      this.onAutoplayBlocked?.();
    });
  }

  /** This page receives no video of `id` (a low-bandwidth mode): show the placeholder
   *  rather than a frozen last picture. */
  setWithheld(id, withheld) {
    const tile = this.tiles.get(id);
    if (!tile) return;
    tile.root.classList.toggle("video-withheld", withheld);
    this._placeholder(tile);
  }

  _placeholder(tile) {
    const hasVideo = Boolean(tile.stream && tile.stream.getVideoTracks().length);
    const show =
      !hasVideo ||
      tile.root.classList.contains("video-muted") ||
      tile.root.classList.contains("video-withheld");
    tile.placeholder.hidden = !show;
    tile.video.classList.toggle("hidden-video", show);
  }

  _layout() {
    this.container.dataset.count = String(this.tiles.size);
  }
}

export class Toasts {
  constructor(container) {
    this.container = container;
  }

  /** `action`: {label, onClick}, a button on the toast that also dismisses it. */
  show(text, { kind = "info", ms = 5000, action = null } = {}) {
    const toast = el("div", `toast toast-${kind}`, text);
    if (action) {
      const button = el("button", "btn btn-primary toast-action", action.label);
      button.type = "button";
      button.addEventListener("click", () => {
        toast.remove();
        action.onClick();
      });
      toast.appendChild(button);
    }
    this.container.appendChild(toast);
    while (this.container.children.length > 4) this.container.firstElementChild.remove();
    setTimeout(() => toast.remove(), ms);
  }
}

export function showView(name) {
  for (const view of ["join-view", "waiting-view", "call-view", "end-view"]) {
    $(view).hidden = view !== name;
  }
  document.body.dataset.view = name;
}

export function setBanner(text) {
  const banner = $("ws-banner");
  banner.textContent = text ?? "";
  banner.hidden = !text;
}

/** A modal question with big buttons; resolves true for yes. `dialog` is the #confirm-dialog. */
export function confirmDialog(dialog, { title, body, yes }) {
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-body").textContent = body;
  dialog.querySelector("#confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.querySelector("#confirm-yes").removeEventListener("click", onYes);
      dialog.querySelector("#confirm-no").removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onYes = () => done(true);
    const onNo = () => done(false);
    dialog.querySelector("#confirm-yes").addEventListener("click", onYes);
    dialog.querySelector("#confirm-no").addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
  });
}
