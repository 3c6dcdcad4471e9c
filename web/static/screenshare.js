// Extra video tracks, the browser side: "Share screen" (getDisplayMedia) and "Add camera"
// (a second camera: a dermatoscope, a wound close-up), each published as a video track of
// its own (`publish_extra` / `unpublish_extra`); the server offers an m-line for it and
// call.js puts the track there. What others publish is shown here too: a screen share
// large to everyone (the spotlight, above the tiles), a second camera as a tile beside its
// sender's. The server checks the permission (`share_screen` for the screen) and the limit
// of two; the buttons only follow what `joined` says is allowed.

import { EXTRA_SOURCES } from "./call.js";
import { $ } from "./ui.js";

export class ScreenShare {
  /** @param {{t: Function, send: (msg: object) => boolean, toasts: object, grid: object,
   *           nameOf: (id: string) => string, mainCamera: () => MediaStreamTrack|null}} opts */
  constructor({ t, send, toasts, grid, nameOf, mainCamera }) {
    Object.assign(this, { t, send, toasts, grid, nameOf, mainCamera });
    /** Our own extra tracks, by source. */
    this.local = { screen: null, camera2: null };
    /** What tests read: what we publish, and what is shown from others. */
    this.state = { publishing: [], spotlight: null, beside: [] };
    this.permissions = [];
    this.spotlight = $("spotlight");
    this.spotlightVideo = $("spotlight-video");
    this.spotlightName = $("spotlight-name");
    this.screenButton = $("screen-btn");
    this.cameraButton = $("camera2-btn");
    this.dialog = $("camera2-dialog");
    this.cameraList = $("camera2-list");
    /** producerId -> {root, video} of second-camera tiles. */
    this.tiles = new Map();
    this.screenButton?.addEventListener("click", () =>
      this.local.screen ? this.stop("screen") : this.shareScreen(),
    );
    this.cameraButton?.addEventListener("click", () =>
      this.local.camera2 ? this.stop("camera2") : this.pickCamera(),
    );
    $("camera2-close")?.addEventListener("click", () => this.dialog.close());
  }

  /** For call.js's handleOffer: the tracks of our extra m-lines. */
  tracks() {
    return { ...this.local };
  }

  /** After `joined`: what this role may do; a new session asks the server again. */
  joined(permissions) {
    this.permissions = permissions;
    for (const source of EXTRA_SOURCES) {
      if (this.local[source]) this.send({ type: "publish_extra", source });
    }
    this.render();
  }

  async shareScreen() {
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 } });
    } catch (err) {
      if (err?.name !== "NotAllowedError") this.toasts.show(this.t("screen.failed"));
      return;
    }
    this.start("screen", stream.getVideoTracks()[0]);
  }

  async pickCamera() {
    let cameras = [];
    try {
      const devices = await navigator.mediaDevices.enumerateDevices();
      cameras = devices.filter((d) => d.kind === "videoinput");
    } catch {
      // no list: the default camera below
    }
    const mainId = this.mainCamera()?.getSettings?.().deviceId;
    // The cameras other than the main one first; the main one too (a phone's rear camera
    // may share its device with the front one).
    cameras.sort((a, b) => (a.deviceId === mainId) - (b.deviceId === mainId));
    this.cameraList.replaceChildren();
    cameras.forEach((camera, i) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-control camera2-choice";
      button.textContent = camera.label || this.t("camera2.nth", { n: String(i + 1) });
      button.addEventListener("click", () => {
        this.dialog.close();
        this.openCamera(camera.deviceId);
      });
      item.appendChild(button);
      this.cameraList.appendChild(item);
    });
    if (cameras.length <= 1) return this.openCamera(cameras[0]?.deviceId);
    this.dialog.showModal();
  }

  async openCamera(deviceId) {
    const video = { width: { ideal: 1280 }, height: { ideal: 720 } };
    if (deviceId) video.deviceId = { exact: deviceId };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video });
    } catch {
      this.toasts.show(this.t("camera2.failed"));
      return;
    }
    this.start("camera2", stream.getVideoTracks()[0]);
  }

  start(source, track) {
    if (!track) return;
    this.local[source] = track;
    // The browser's own "Stop sharing" bar ends the track: stop publishing it then too.
    track.addEventListener("ended", () => {
      if (this.local[source] === track) this.stop(source);
    });
    this.send({ type: "publish_extra", source });
    this.render();
  }

  stop(source) {
    const track = this.local[source];
    this.local[source] = null;
    track?.stop();
    this.send({ type: "unpublish_extra", source });
    this.render();
  }

  /** The server refused (`forbidden`, `too_many_producers`): let the track go. */
  onError(msg) {
    if (msg.ref !== "publish_extra") return false;
    for (const source of EXTRA_SOURCES) {
      const track = this.local[source];
      // Only one that the server has not put on an m-line yet.
      if (track && !this.state.publishing.includes(source)) {
        this.local[source] = null;
        track.stop();
      }
    }
    this.render();
    return true;
  }

  /** After each offer: what others publish, shown; what we publish, confirmed. */
  sync(slots, extras) {
    this.state.publishing = slots
      .filter((s) => s.role === "publish" && EXTRA_SOURCES.includes(s.source))
      .map((s) => s.source);
    const screen = extras.find((x) => x.source === "screen");
    this.showSpotlight(screen ?? null);
    const seconds = extras.filter((x) => x.source === "camera2");
    for (const [producerId, tile] of this.tiles) {
      if (!seconds.some((x) => x.producerId === producerId)) {
        tile.video.srcObject = null;
        tile.root.remove();
        this.tiles.delete(producerId);
      }
    }
    for (const extra of seconds) this.showBeside(extra);
    this.state.beside = seconds.map((x) => x.participantId);
    this.render();
  }

  showSpotlight(extra) {
    const current = this.state.spotlight;
    if (!extra) {
      if (current) {
        this.spotlightVideo.srcObject = null;
        this.spotlight.hidden = true;
        document.body.classList.remove("has-spotlight");
        this.state.spotlight = null;
      }
      return;
    }
    this.spotlightName.textContent = this.t("screen.of", { name: this.nameOf(extra.participantId) });
    if (current?.producerId === extra.producerId) return;
    this.state.spotlight = { participantId: extra.participantId, producerId: extra.producerId };
    this.spotlightVideo.srcObject = new MediaStream([extra.track]);
    this.spotlightVideo.play().catch(() => {});
    this.spotlight.hidden = false;
    document.body.classList.add("has-spotlight");
  }

  showBeside(extra) {
    let tile = this.tiles.get(extra.producerId);
    if (!tile) {
      const root = document.createElement("figure");
      root.className = "tile tile-extra";
      root.dataset.producerId = extra.producerId;
      const video = document.createElement("video");
      video.className = "tile-video";
      video.autoplay = true;
      video.playsInline = true;
      video.muted = true;
      const caption = document.createElement("figcaption");
      caption.className = "tile-caption";
      const name = document.createElement("span");
      name.className = "tile-name";
      caption.appendChild(name);
      root.append(video, caption);
      tile = { root, video, name };
      this.tiles.set(extra.producerId, tile);
      video.srcObject = new MediaStream([extra.track]);
      video.play().catch(() => {});
    }
    tile.name.textContent = this.t("camera2.of", { name: this.nameOf(extra.participantId) });
    // Beside the sender's own tile.
    const owner = this.grid.tiles.get(extra.participantId)?.root;
    if (owner && owner.nextSibling !== tile.root) owner.after(tile.root);
    else if (!owner && !tile.root.isConnected) this.grid.container.appendChild(tile.root);
  }

  /** A new session: nothing from others is shown until the next offer. */
  clear() {
    this.sync([], []);
  }

  /** The call is over: our own tracks stop too. */
  end() {
    for (const source of EXTRA_SOURCES) {
      this.local[source]?.stop();
      this.local[source] = null;
    }
    this.clear();
  }

  render() {
    const may = (p) => this.permissions.includes(p);
    if (this.screenButton) {
      this.screenButton.hidden = !may("share_screen");
      this.screenButton.textContent = this.t(this.local.screen ? "screen.stop" : "screen.share");
      this.screenButton.classList.toggle("active", Boolean(this.local.screen));
    }
    if (this.cameraButton) {
      this.cameraButton.hidden = !may("publish");
      this.cameraButton.textContent = this.t(this.local.camera2 ? "camera2.stop" : "camera2.add");
      this.cameraButton.classList.toggle("active", Boolean(this.local.camera2));
    }
  }
}
