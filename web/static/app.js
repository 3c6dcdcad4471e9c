// teleconsult browser client: join view, then the call view, speaking protocol v1.
//
// Test hook: window.teleconsult = { pc, state, participants } (pc once joined);
// state.recording is the recording as this client sees it (recording.js).
//
// URL parameters: ?autojoin=1 joins as soon as the camera is ready; ?kiosk=1 is kiosk mode
// (extra-large consent buttons, set as a body class by the server) and joins by itself too;
// ?lang=en|zh-CN picks the language (signaling/pages.py); ?relay=1 sends all media through
// the TURN server (to check a site's relay; docs/architecture.md, Media).

import { VideoModeUi } from "./bandwidth.js";
import { Call, EXTRA_SOURCES } from "./call.js";
import { ChatPanel } from "./chat.js";
import { newRecordingState, RecordingUi } from "./recording.js";
import { RecordingsPanel } from "./recordings.js";
import { ScreenShare } from "./screenshare.js";
import { Signaling, signalingUrl } from "./signaling.js";
import { StallWatch } from "./stall.js";
import {
  $,
  confirmDialog,
  makeTranslator,
  roleLabel,
  setBanner,
  showView,
  TileGrid,
  Toasts,
} from "./ui.js";
import { ImageViewer } from "./viewer.js";
import { VideoRateUi } from "./video-rate.js";
import { WardRound } from "./wardround.js";

const boot = JSON.parse($("boot").textContent);
const t = makeTranslator(boot.messages);
const params = new URLSearchParams(window.location.search);
const isObserver = boot.role === "observer";
const PING_INTERVAL_MS = 15000;
// A socket whose address is gone (a phone moving from Wi-Fi to 4G) stays "open" for minutes
// while TCP retransmits into nothing. A ping unanswered by its deadline proves it dead: the
// page abandons it and resumes the session on a new one. The routine ping allows for a slow
// link; the probe sent the moment the media connection falters is short, because that is
// when a dead socket costs seconds of picture.
const PONG_DEADLINE_MS = 6000;
const PROBE_DEADLINE_MS = 1000;

const state = {
  phase: "join", // join | joining | waiting | call | reconnecting | ended
  waiting: null, // {position, total} while in the waiting room
  waitingRoom: [], // for a host: who waits ({id, name, role, since})
  rttMs: null, // the last signaling round trip (the waiting room's connection check)
  iceServers: [], // from `joined`, for a new RTCPeerConnection after a media_reset
  resumeToken: null, // from `joined`/`waiting`: the same session back after a dropped socket
  mediaRestarts: 0, // new media connections this page asked for
  self: null, // ParticipantInfo from `joined`
  consultation: null,
  permissions: [],
  connection: "new", // the RTCPeerConnection's connectionState
  ws: "closed",
  media: "pending", // pending | ok | no_camera | no_mic | failed | unsupported | observer
  publish: [],
  micMuted: false,
  camMuted: false,
  endReason: null,
  offers: 0, // offers answered in this session
  abandoned: 0, // signaling sockets given up for want of a pong
  stalled: false, // the media connection stopped bringing anything in (stall.js)
  ladder: [], // the last steps of the reconnect ladder, [ms since epoch, step] (for tests)
  slots: [], // the last offer's `tracks`
  recording: newRecordingState(),
  kiosk: Boolean(boot.kiosk),
  videoUnavailable: false, // the server said this browser cannot use the room's video codec
};
/** id -> {id, name, role, audioMuted, videoMuted, producers: {audio?, video?, screen?, camera2?}, self?} */
const participants = {};
const hook = {
  pc: null,
  state,
  participants,
  // For tests: lose the signaling socket as a flaky network would.
  dropSignaling: () => sig?.ws?.close(),
};
window.teleconsult = hook;

const local = { stream: null, audio: null, video: null };
let sig = null;
let call = null;
let pingTimer = null;
let pongTimer = null;
let reconnectTimer = null;
let reconnectAttempts = 0;
let lastError = null;
let askedForTap = false;

const toasts = new Toasts($("toasts"));
const stallWatch = new StallWatch(
  () => hook.pc,
  () => {
    state.stalled = true;
    step("media stalled");
    probeSignaling(PROBE_DEADLINE_MS);
  },
  () => {
    state.stalled = false;
    step("media flowing");
  },
);
const grid = new TileGrid($("grid"), t, { onAutoplayBlocked: askForTap, onRemove: askToRemove });
const recordingUi = new RecordingUi({
  t,
  state,
  participants,
  toasts,
  send: (msg) => Boolean(sig?.send(msg)),
  onStopped: () => {
    if (panel.dialog.open) panel.refresh();
  },
});
const chat = new ChatPanel({
  t,
  send: (msg) => Boolean(sig?.send(msg)),
  self: () => state.self,
  toasts,
});
const viewer = new ImageViewer({
  t,
  token: boot.token,
  consultation: () => state.consultation?.id ?? boot.consultation,
  send: (msg) => Boolean(sig?.send(msg)),
  self: () => state.self,
  nameOf: (id) => participants[id]?.name || t("role.unknown"),
  toasts,
  mayClose: () => state.permissions.includes("admit"),
});
const videoMode = new VideoModeUi({
  t,
  send: (msg) => Boolean(sig?.send(msg)),
  toasts,
  grid,
  pc: () => call?.pc ?? null,
});
const ward = new WardRound({
  t,
  send: (msg) => Boolean(sig?.send(msg)),
  self: () => state.self,
  participants,
  grid,
  toasts,
  permissions: () => state.permissions,
  localVideo: () => local.video,
});
hook.ward = ward.state;
const screenShare = new ScreenShare({
  t,
  send: (msg) => Boolean(sig?.send(msg)),
  toasts,
  grid,
  nameOf: (id) => participants[id]?.name || t("role.unknown"),
  mainCamera: () => local.video,
});
hook.screenShare = screenShare.state;
hook.chat = chat;
hook.viewer = viewer.state;
hook.videoMode = videoMode;
const videoRate = new VideoRateUi({ t, nameOf: (id) => participants[id]?.name || t("role.unknown") });
hook.videoRate = videoRate;
const panel = new RecordingsPanel({
  t,
  token: boot.token,
  consultation: () => state.consultation?.id ?? boot.consultation,
  lang: boot.lang,
});

// ------------------------------------------------------------------ local media

async function acquireMedia() {
  const status = $("media-status");
  if (isObserver) {
    state.media = "observer";
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia || !window.RTCPeerConnection) {
    state.media = "unsupported";
    status.textContent = t("media.unsupported");
    status.classList.add("warn");
    return;
  }
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30, max: 30 } };
  // A ward round's bedside camera may be moved from afar (wardround.js): ask for its
  // pan/tilt/zoom where it has them (ignored where not).
  if (boot.kind === "ward_round") Object.assign(video, { pan: true, tilt: true, zoom: true });
  const attempts = [
    [{ audio: true, video }, "ok", "media.ready"],
    [{ audio: true }, "no_camera", "media.no_camera"],
    [{ video }, "no_mic", "media.no_mic"],
  ];
  for (const [constraints, outcome, key] of attempts) {
    try {
      local.stream = await navigator.mediaDevices.getUserMedia(constraints);
      local.audio = local.stream.getAudioTracks()[0] ?? null;
      local.video = local.stream.getVideoTracks()[0] ?? null;
      state.media = outcome;
      status.textContent = t(key);
      status.classList.toggle("warn", outcome !== "ok");
      const preview = $("preview");
      if (preview && local.video) preview.srcObject = new MediaStream([local.video]);
      return;
    } catch (err) {
      console.warn("teleconsult: getUserMedia", constraints, "failed:", err?.name);
    }
  }
  state.media = "failed";
  status.textContent = t("media.failed");
  status.classList.add("warn");
}

const mediaReady = acquireMedia();

function stopLocalMedia() {
  for (const track of local.stream?.getTracks() ?? []) track.stop();
}

// ------------------------------------------------------------------ joining

async function join() {
  if (state.phase !== "join") return;
  state.phase = "joining";
  const btn = $("join-btn");
  btn.disabled = true;
  btn.textContent = t("join.joining");
  await mediaReady;
  state.publish = isObserver ? [] : ["audio", "video"].filter((kind) => local[kind]);
  connect();
}

function connect() {
  reconnectTimer = null;
  const s = new Signaling(signalingUrl(), {
    onMessage: (msg) => (s === sig ? onMessage(msg) : undefined),
    onClose: (ev) => (s === sig ? onClose(ev) : undefined),
    onHandlerError: (err, msg) => {
      if (msg.type === "offer") toasts.show(t("error.bad_sdp"), { kind: "error" });
    },
  });
  sig = s;
  s.open().then(
    () => {
      state.ws = "open";
      // After a dropped socket, ask for the same session back: the media connection was
      // never touched. The server answers `resumed`, or `joined` for a new session.
      const resume = state.resumeToken ? { resume: state.resumeToken } : {};
      s.send({
        type: "join",
        v: 1,
        token: boot.token,
        publish: state.publish,
        videoCodecs: videoCodecs(),
        ...resume,
      });
    },
    () => {
      // onClose runs too and schedules the retry.
    },
  );
}

// The video codecs (of those the server forwards) this browser can both send and receive,
// so the server can pick one per consultation that everyone present can use; undefined
// (the server assumes all) where the browser cannot say. An observer only receives.
function videoCodecs() {
  const recv = window.RTCRtpReceiver?.getCapabilities?.("video");
  const send = isObserver ? recv : window.RTCRtpSender?.getCapabilities?.("video");
  if (!recv || !send) return undefined;
  const usable = (caps, name) =>
    caps.codecs.some((c) => {
      if (c.mimeType.toLowerCase() !== `video/${name.toLowerCase()}`) return false;
      if (name !== "H264" || !c.sdpFmtpLine) return true;
      // The server's H.264 is constrained baseline (42e01f) in packetization mode 1.
      const fmtp = c.sdpFmtpLine.toLowerCase();
      return /profile-level-id=42[ce]0/.test(fmtp) && fmtp.includes("packetization-mode=1");
    });
  return ["VP8", "H264"].filter((name) => usable(send, name) && usable(recv, name));
}

function scheduleReconnect() {
  if (reconnectTimer !== null) return;
  const delay = Math.min(1000 * 2 ** reconnectAttempts, 10000);
  reconnectAttempts += 1;
  reconnectTimer = setTimeout(connect, delay);
}

// ------------------------------------------------------------------ messages

async function onMessage(msg) {
  switch (msg.type) {
    case "joined":
      return onJoined(msg);
    case "offer":
      return onOffer(msg);
    case "participant_joined":
      return onParticipantJoined(msg.participant);
    case "participant_left":
      return onParticipantLeft(msg.participantId);
    // Keyed by source for extra video tracks, so a screen share leaves `video` (the camera).
    case "track_published":
      return onTrack(msg.participantId, extraSource(msg) ?? msg.kind, msg.producerId);
    case "track_unpublished":
      return onTrack(msg.participantId, extraSource(msg) ?? msg.kind, null);
    case "mute_changed":
      // An extra video track paused (msg.source) is not the camera: the tile stays as it is.
      if (msg.source) return undefined;
      return onMuteChanged(msg.participantId, msg.kind, msg.muted);
    case "consent_request":
      return recordingUi.onConsentRequest(msg);
    case "recording":
      return recordingUi.onState(msg);
    case "error":
      return onError(msg);
    case "bye":
      return onBye(msg.reason, msg.message);
    case "waiting":
      return onWaiting(msg);
    case "media_reset":
      return onMediaReset();
    case "resumed":
      return onResumed();
    case "waiting_room":
      return onWaitingRoom(msg.waiting ?? []);
    case "pong":
      return onPong(msg);
    case "chat":
      return chat.onMessage(msg);
    case "chat_history":
      return chat.onHistory(msg.messages ?? []);
    case "share":
      return viewer.onShare(msg);
    case "share_ended":
      return viewer.onShareEnded(msg);
    case "pointer":
      return viewer.onPointer(msg);
    case "video_policy":
      return videoMode.onPolicy(msg);
    case "video_rate":
      return videoRate.onRate(msg);
    case "floor":
      return ward.onFloor(msg);
    case "agenda":
      return ward.onAgenda(msg);
    case "camera_request":
      return ward.onCameraRequest(msg);
    case "camera_result":
      return ward.onCameraResult(msg);
    default:
      console.warn("teleconsult: unknown message type", msg.type);
      return undefined;
  }
}

// ------------------------------------------------------------------ the waiting room

const CHECK_INTERVAL_MS = 2000;
const SLOW_RTT_MS = 400;
let checkTimer = null;
let waitingTimer = null;

function onWaiting(msg) {
  state.phase = "waiting";
  if (msg.resumeToken) state.resumeToken = msg.resumeToken;
  state.waiting = { position: msg.position, total: msg.total };
  reconnectAttempts = 0;
  setBanner(null);
  $("waiting-place").textContent =
    msg.position <= 1 ? t("waiting.next") : t("waiting.place", { position: msg.position });
  const preview = $("waiting-preview");
  if (preview && local.video && !preview.srcObject) preview.srcObject = new MediaStream([local.video]);
  showView("waiting-view");
  // Nothing of the call reaches this page until the doctor lets us in: no media
  // connection exists yet. What can be checked is the way to the server.
  if (checkTimer === null) {
    const ping = () => sig?.send({ type: "ping", ts: Date.now() });
    ping();
    checkTimer = setInterval(ping, CHECK_INTERVAL_MS);
  }
}

function stopConnectionCheck() {
  if (checkTimer !== null) clearInterval(checkTimer);
  checkTimer = null;
}

function onPong(msg) {
  if (pongTimer !== null) clearTimeout(pongTimer);
  pongTimer = null;
  if (typeof msg.ts !== "number") return;
  state.rttMs = Math.max(0, Date.now() - msg.ts);
  if (state.phase !== "waiting") return;
  const check = $("waiting-check");
  const slow = state.rttMs > SLOW_RTT_MS;
  check.textContent = t(slow ? "waiting.poor" : "waiting.good", { ms: state.rttMs });
  check.classList.toggle("good", !slow);
  check.classList.toggle("poor", slow);
}

function onWaitingRoom(list) {
  state.waitingRoom = list;
  renderWaitingRoom();
  if (waitingTimer === null && list.length) waitingTimer = setInterval(renderWaitingRoom, 1000);
  if (!list.length && waitingTimer !== null) {
    clearInterval(waitingTimer);
    waitingTimer = null;
  }
}

function renderWaitingRoom() {
  const panel = $("waiting-panel");
  const list = $("waiting-list");
  panel.hidden = state.waitingRoom.length === 0 || state.phase !== "call";
  list.replaceChildren();
  const now = Date.now() / 1000;
  for (const w of state.waitingRoom) {
    const li = document.createElement("li");
    li.dataset.participantId = w.id;
    const name = document.createElement("span");
    name.className = "waiting-name";
    name.textContent = w.name || t("role.unknown");
    const role = document.createElement("span");
    role.className = `role-badge role-${/^[a-z_]+$/.test(w.role) ? w.role : "unknown"}`;
    role.textContent = roleLabel(t, w.role);
    const since = document.createElement("span");
    since.className = "waiting-since";
    const s = Math.max(0, Math.floor(now - w.since));
    since.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    const admit = document.createElement("button");
    admit.type = "button";
    admit.className = "btn btn-primary admit-btn";
    admit.textContent = t("host.admit");
    admit.addEventListener("click", () => sig?.send({ type: "admit", participantId: w.id }));
    const away = document.createElement("button");
    away.type = "button";
    away.className = "btn send-away-btn";
    away.textContent = t("host.send_away");
    away.addEventListener("click", () => askToSendAway(w));
    li.append(name, role, since, admit, away);
    list.appendChild(li);
  }
}

function askToSendAway(w) {
  const dialog = $("send-away-dialog");
  const note = $("send-away-note");
  $("send-away-title").textContent = t("host.send_away_title", { name: w.name || t("role.unknown") });
  note.value = "";
  const done = (yes) => {
    $("send-away-yes").removeEventListener("click", onYes);
    $("send-away-no").removeEventListener("click", onNo);
    if (dialog.open) dialog.close();
    if (yes) {
      const message = note.value.trim().slice(0, 200);
      sig?.send({ type: "send_away", participantId: w.id, ...(message ? { message } : {}) });
    }
  };
  const onYes = () => done(true);
  const onNo = () => done(false);
  $("send-away-yes").addEventListener("click", onYes);
  $("send-away-no").addEventListener("click", onNo);
  dialog.showModal();
}

function onResumed() {
  state.phase = state.resumeFrom ?? "call";
  state.resumes = (state.resumes ?? 0) + 1;
  reconnectAttempts = 0;
  lastError = null;
  setBanner(null);
  startPing();
  step("resumed");
  // The media may have failed while the signaling was down, and a restart asked for on a
  // socket that turned out dead never arrived: ask now. A stall that came with a dead
  // socket is a network switch: the old media path is gone too.
  if (state.stalled || state.connection === "failed" || state.connection === "disconnected") {
    lastRestart = 0;
    askForNewMedia();
  }
}

function onJoined(msg) {
  stopConnectionCheck();
  // A new session: whatever connection the last one had goes.
  if (call) teardownCall();
  state.resumeToken = msg.resumeToken ?? null;
  state.waiting = null;
  state.phase = "call";
  reconnectAttempts = 0;
  lastError = null;
  setBanner(null);
  state.self = msg.participant;
  state.consultation = msg.consultation;
  state.permissions = msg.permissions ?? [];
  // A new session: the server says again if video is still out of reach.
  state.videoUnavailable = false;
  $("media-notice").hidden = true;

  for (const id of Object.keys(participants)) delete participants[id];
  grid.clearRemote();
  const me = { ...msg.participant, producers: {}, self: true };
  participants[me.id] = me;
  for (const [id, tile] of grid.tiles) if (tile.self && id !== me.id) grid.remove(id);
  grid.upsert(me, { self: true });
  grid.setStream(me.id, local.video ? new MediaStream([local.video]) : null);
  for (const p of msg.participants ?? []) {
    participants[p.id] = { ...p, producers: {} };
    grid.upsert(p);
  }

  state.iceServers = msg.iceServers ?? [];
  newCall();

  showView("call-view");
  // A new session: the server tells us about a running recording (and asks) right away,
  // and sends the chat so far and the image being shown.
  recordingUi.reset();
  viewer.reset();
  chat.reset();
  videoMode.rejoined();
  videoMode.render();
  videoMode.start();
  ward.joined();
  screenShare.clear();
  screenShare.joined(state.permissions);
  updateControls();
  updateWaiting();
  // A reconnect starts a new session: tell the others what we had muted.
  if (state.micMuted) sig?.send({ type: "mute", kind: "audio", muted: true });
  if (state.camMuted) sig?.send({ type: "mute", kind: "video", muted: true });
  startPing();
  stallWatch.start();
}

function newCall() {
  const s = sig;
  call = new Call({
    iceServers: state.iceServers,
    relayOnly: params.get("relay") === "1",
    onCandidate: (c) => s.send(candidateMessage(c)),
    onStateChange: setConnectionState,
  });
  hook.pc = call.pc;
  setConnectionState(call.state());
}

// The consultation's media moved to another server process (the old one died): a new
// RTCPeerConnection, the same session; the next offer comes for it.
function onMediaReset() {
  if (!call) return;
  call.close();
  newCall();
}

function candidateMessage(c) {
  if (!c) return { type: "candidate", candidate: null };
  return {
    type: "candidate",
    candidate: c.candidate,
    sdpMid: c.sdpMid,
    sdpMLineIndex: c.sdpMLineIndex,
  };
}

async function onOffer(msg) {
  if (!call) return;
  const s = sig;
  const sdp = await call.handleOffer(msg, {
    audio: local.audio,
    video: local.video,
    ...screenShare.tracks(),
  });
  s.send({ type: "answer", sdp });
  call.answerSent();
  state.offers = call.offers;
  state.slots = msg.tracks ?? [];
  syncRemoteMedia();
  screenShare.sync(state.slots, call.extraTracks());
}

function syncRemoteMedia() {
  if (!call) return;
  const tracks = call.remoteTracks();
  for (const id of tracks.keys()) {
    if (!participants[id]) {
      // Media for someone we have not been told about yet: a tile now, a name later.
      participants[id] = { id, name: "", role: "unknown", producers: {} };
      grid.upsert(participants[id]);
    }
  }
  for (const p of Object.values(participants)) {
    if (!p.self) grid.setTracks(p.id, tracks.get(p.id) ?? []);
  }
  videoMode.render();
  updateWaiting();
}

function onParticipantJoined(p) {
  const known = participants[p.id];
  participants[p.id] = { ...p, producers: known?.producers ?? {} };
  grid.upsert(p);
  videoMode.render();
  toasts.show(t("call.participant_joined", { name: p.name || t("role.unknown") }));
  updateWaiting();
}

function onParticipantLeft(id) {
  const p = participants[id];
  if (!p || p.self) return;
  delete participants[id];
  grid.remove(id);
  toasts.show(t("call.participant_left", { name: p.name || t("role.unknown") }));
  updateWaiting();
}

function onTrack(id, kind, producerId) {
  const p = participants[id];
  if (!p) return;
  if (producerId) p.producers[kind] = producerId;
  else delete p.producers[kind];
}

function extraSource(msg) {
  return EXTRA_SOURCES.includes(msg.source) ? msg.source : null;
}

function onMuteChanged(id, kind, muted) {
  const p = participants[id];
  if (!p) return;
  p[kind === "audio" ? "audioMuted" : "videoMuted"] = Boolean(muted);
  grid.setMuted(id, kind, Boolean(muted));
}

function errorText(msg) {
  const key = `error.${msg.code}`;
  const text = t(key);
  return text === key ? msg.message || msg.code : text;
}

function onError(msg) {
  if (msg.code === "video_unavailable") return onVideoUnavailable(msg);
  lastError = msg;
  console.warn("teleconsult: server error", msg.code, msg.ref ?? "", msg.message ?? "");
  if (recordingUi.onError(msg)) return;
  screenShare.onError(msg);
  toasts.show(errorText(msg), { kind: "error" });
}

// Not an error: this browser cannot use the consultation's video format, so the call goes
// on with sound only. Say so for as long as it lasts, not in a passing toast.
function onVideoUnavailable(msg) {
  console.info("teleconsult: video unavailable:", msg.message ?? "");
  state.videoUnavailable = true;
  $("media-notice").hidden = false;
}

// After these the link no longer opens the room: offering "Join again" would only fail.
const FINAL_BYES = new Set(["removed", "consultation_ended", "sent_away"]);

function onBye(reason, note) {
  state.endReason = reason;
  const key = `bye.${reason}`;
  let text = t(key);
  // The host's own words, shown as text (never as markup).
  if (reason === "sent_away" && note) text = t("bye.sent_away_note", { note });
  end(text === key ? t("end.reason", { reason }) : text);
  $("rejoin-btn").hidden = FINAL_BYES.has(reason);
}

function onClose(ev) {
  state.ws = "closed";
  stopPing();
  step(`socket closed ${ev.code}`);
  if (state.phase === "ended") return;
  if (ev.code === 4001 || ev.code === 4003) {
    teardownCall();
    // Token or admission refused: retrying cannot help.
    end(lastError ? errorText(lastError) : ev.reason || t("call.ws_failed"));
    if (lastError?.code === "revoked_token") $("rejoin-btn").hidden = true;
    return;
  }
  // The call (and its media) goes on while we get the signaling back; `resumed` keeps it,
  // a `joined` (the session was let go meanwhile) starts over.
  state.resumeFrom = state.phase === "waiting" ? "waiting" : "call";
  state.phase = state.phase === "join" ? "join" : "reconnecting";
  setBanner(reconnectAttempts >= 5 ? t("call.ws_failed") : t("call.ws_lost"));
  if (state.phase === "reconnecting") scheduleReconnect();
}

// ------------------------------------------------------------------ call state

function teardownCall() {
  recordingUi.reset();
  videoMode.stop();
  call?.close();
  call = null;
  hook.pc = null;
  if (state.connection !== "new") setConnectionState("closed");
}

// A media connection that fails (a network switch: Wi-Fi to 4G, a new address) is replaced:
// the server makes a new one (media_reset, a new offer) and the call goes on. "disconnected"
// may recover by itself; after a few seconds of it, it is treated as failed.
const MEDIA_GRACE_MS = 2500;
const RESTART_EVERY_MS = 5000;
let mediaTimer = null;
let lastRestart = 0;

function watchMedia(s) {
  if (s === state.connection) return;
  if (mediaTimer !== null) clearTimeout(mediaTimer);
  mediaTimer = null;
  step(`media ${s}`);
  // Whatever cut the media may have cut the signaling too: find out now, not at the next
  // routine ping, or the restart below goes down a dead socket.
  if (s === "failed" || s === "disconnected") probeSignaling(PROBE_DEADLINE_MS);
  if (s === "failed") askForNewMedia();
  else if (s === "disconnected") mediaTimer = setTimeout(askForNewMedia, MEDIA_GRACE_MS);
}

function askForNewMedia() {
  mediaTimer = null;
  const now = Date.now();
  if (state.phase !== "call" || now - lastRestart < RESTART_EVERY_MS) return;
  lastRestart = now;
  state.mediaRestarts = (state.mediaRestarts ?? 0) + 1;
  step("media_restart");
  sig?.send({ type: "media_restart" });
}

function setConnectionState(s) {
  watchMedia(s);
  state.connection = s;
  const box = $("conn-state");
  box.hidden = false;
  box.dataset.state = s;
  const key = `call.state.${s}`;
  const text = t(key);
  $("conn-state-text").textContent = t("call.state_line", { state: text === key ? s : text });
  $("conn-state-text").dataset.state = s;
}

function end(text) {
  state.phase = "ended";
  // A nursing-home terminal's call page goes back to its home screen by itself.
  if (params.get("terminal") === "1") setTimeout(() => window.location.assign("/terminal"), 8000);
  stopConnectionCheck();
  stopPing();
  stallWatch.stop();
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  reconnectTimer = null;
  sig?.close();
  teardownCall();
  stopLocalMedia();
  screenShare.end();
  setBanner(null);
  for (const id of [...grid.tiles.keys()]) grid.remove(id);
  $("end-message").textContent = text;
  $("conn-state").hidden = true;
  $("end-recordings-btn").hidden = !canViewRecordings();
  showView("end-view");
}

function startPing() {
  stopPing();
  pingTimer = setInterval(() => probeSignaling(PONG_DEADLINE_MS), PING_INTERVAL_MS);
}

function stopPing() {
  if (pingTimer !== null) clearInterval(pingTimer);
  pingTimer = null;
  if (pongTimer !== null) clearTimeout(pongTimer);
  pongTimer = null;
}

// A ping that must be answered within `deadlineMs`; a shorter deadline replaces a longer one.
let pongDue = 0;
function probeSignaling(deadlineMs) {
  if (!sig || state.ws !== "open" || state.phase === "ended") return;
  const due = Date.now() + deadlineMs;
  if (pongTimer !== null && pongDue <= due) return;
  if (pongTimer !== null) clearTimeout(pongTimer);
  pongDue = due;
  pongTimer = setTimeout(abandonSocket, deadlineMs);
  sig.send({ type: "ping", ts: Date.now() });
}

// The socket is dead though the browser still calls it open: stop listening to it (its
// close, whenever it comes, is ignored) and resume the session on a new one at once. The
// server lets the old one go when the new one resumes.
function abandonSocket() {
  pongTimer = null;
  const dead = sig;
  if (!dead || state.phase === "ended") return;
  state.abandoned += 1;
  step("no pong: socket abandoned");
  sig = null;
  dead.close(4000, "no pong");
  onClose({ code: 4000, reason: "no pong" });
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  connect();
}

// The reconnect ladder's steps, kept short, for tests and for a person reading the console.
function step(what) {
  state.ladder.push([Date.now(), what]);
  if (state.ladder.length > 50) state.ladder.shift();
  console.info("teleconsult:", what);
}

function updateWaiting() {
  const others = Object.values(participants).filter((p) => !p.self).length;
  $("waiting").hidden = others > 0;
}

function askForTap() {
  if (askedForTap) return;
  askedForTap = true;
  toasts.show(t("call.tap_for_sound"), { ms: 15000 });
  document.addEventListener("pointerdown", () => grid.unmuteAll(), { once: true });
}

// ------------------------------------------------------------------ controls

function canViewRecordings() {
  return state.permissions.includes("view_recordings");
}

// ------------------------------------------------------------------ the host

async function askToRemove(id) {
  const name = participants[id]?.name || t("role.unknown");
  const yes = await confirmDialog($("confirm-dialog"), {
    title: t("host.remove_title", { name }),
    body: t("host.remove_body", { name }),
    yes: t("host.remove_confirm"),
  });
  if (yes) sig?.send({ type: "remove", participantId: id });
}

async function askToEndForAll() {
  const yes = await confirmDialog($("confirm-dialog"), {
    title: t("host.end_title"),
    body: t("host.end_body"),
    yes: t("host.end_confirm"),
  });
  if (yes) sig?.send({ type: "end" });
}

function updateControls() {
  $("recordings-btn").hidden = !canViewRecordings();
  $("share-btn").hidden = !state.permissions.includes("share_images");
  // Shown for the roles that may; the server checks every remove and end again.
  $("end-all-btn").hidden = !state.permissions.includes("end_consultation");
  grid.setCanRemove(state.permissions.includes("remove_participant"));
  recordingUi.render();
  const mic = $("mic-btn");
  const cam = $("cam-btn");
  if (mic) {
    mic.disabled = !local.audio;
    mic.textContent = t(state.micMuted ? "call.unmute_mic" : "call.mute_mic");
    mic.setAttribute("aria-pressed", String(state.micMuted));
    mic.classList.toggle("active", state.micMuted);
  }
  if (cam) {
    cam.disabled = !local.video;
    cam.textContent = t(state.camMuted ? "call.camera_on" : "call.camera_off");
    cam.setAttribute("aria-pressed", String(state.camMuted));
    cam.classList.toggle("active", state.camMuted);
  }
}

function toggle(kind) {
  const track = local[kind];
  if (!track) return;
  const field = kind === "audio" ? "micMuted" : "camMuted";
  state[field] = !state[field];
  track.enabled = !state[field];
  sig?.send({ type: "mute", kind, muted: state[field] });
  if (state.self) {
    participants[state.self.id][kind === "audio" ? "audioMuted" : "videoMuted"] = state[field];
    grid.setMuted(state.self.id, kind, state[field]);
  }
  updateControls();
}

function leave() {
  sig?.send({ type: "leave" });
  end(t("end.left"));
}

$("join-btn").addEventListener("click", join);
$("mic-btn")?.addEventListener("click", () => toggle("audio"));
$("cam-btn")?.addEventListener("click", () => toggle("video"));
$("leave-btn").addEventListener("click", leave);
$("end-all-btn").addEventListener("click", askToEndForAll);
$("waiting-leave-btn").addEventListener("click", leave);
$("admit-all-btn").addEventListener("click", () => sig?.send({ type: "admit_all" }));
$("rejoin-btn").addEventListener("click", () => window.location.reload());
$("recordings-btn").addEventListener("click", () => panel.open());
$("share-btn").addEventListener("click", () => {
  // The image being shown, if it was closed here; else pick a file to show.
  if (viewer.current && !viewer.dialog.open) viewer.reopen();
  else $("share-file").click();
});
$("share-file").addEventListener("change", (ev) => {
  const file = ev.target.files?.[0];
  ev.target.value = "";
  if (file) viewer.share(file);
});
$("end-recordings-btn").addEventListener("click", () => panel.open());
window.addEventListener("pagehide", () => {
  if (state.phase === "call" || state.phase === "waiting") sig?.send({ type: "leave" });
});

showView("join-view");
if (params.get("autojoin") === "1" || state.kiosk) join();
