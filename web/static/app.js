// teleconsult browser client: join view, then the call view, speaking protocol v1.
//
// Test hook: window.teleconsult = { pc, state, participants } (pc once joined);
// state.recording is the recording as this client sees it (recording.js).
//
// URL parameters: ?autojoin=1 joins as soon as the camera is ready; ?kiosk=1 is kiosk mode
// (extra-large consent buttons, set as a body class by the server) and joins by itself too;
// ?lang=en|zh-CN picks the language (signaling/pages.py).

import { Call } from "./call.js";
import { newRecordingState, RecordingUi } from "./recording.js";
import { RecordingsPanel } from "./recordings.js";
import { Signaling, signalingUrl } from "./signaling.js";
import { $, makeTranslator, setBanner, showView, TileGrid, Toasts } from "./ui.js";

const boot = JSON.parse($("boot").textContent);
const t = makeTranslator(boot.messages);
const params = new URLSearchParams(window.location.search);
const isObserver = boot.role === "observer";
const PING_INTERVAL_MS = 15000;

const state = {
  phase: "join", // join | joining | call | reconnecting | ended
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
  slots: [], // the last offer's `tracks`
  recording: newRecordingState(),
  kiosk: Boolean(boot.kiosk),
};
/** id -> {id, name, role, audioMuted, videoMuted, producers: {audio?, video?}, self?} */
const participants = {};
const hook = { pc: null, state, participants };
window.teleconsult = hook;

const local = { stream: null, audio: null, video: null };
let sig = null;
let call = null;
let pingTimer = null;
let reconnectTimer = null;
let reconnectAttempts = 0;
let lastError = null;
let askedForTap = false;

const toasts = new Toasts($("toasts"));
const grid = new TileGrid($("grid"), t, { onAutoplayBlocked: askForTap });
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
      s.send({ type: "join", v: 1, token: boot.token, publish: state.publish });
    },
    () => {
      // onClose runs too and schedules the retry.
    },
  );
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
    case "track_published":
      return onTrack(msg.participantId, msg.kind, msg.producerId);
    case "track_unpublished":
      return onTrack(msg.participantId, msg.kind, null);
    case "mute_changed":
      return onMuteChanged(msg.participantId, msg.kind, msg.muted);
    case "consent_request":
      return recordingUi.onConsentRequest(msg);
    case "recording":
      return recordingUi.onState(msg);
    case "error":
      return onError(msg);
    case "bye":
      return onBye(msg.reason);
    case "pong":
      return undefined;
    default:
      console.warn("teleconsult: unknown message type", msg.type);
      return undefined;
  }
}

function onJoined(msg) {
  state.phase = "call";
  reconnectAttempts = 0;
  lastError = null;
  setBanner(null);
  state.self = msg.participant;
  state.consultation = msg.consultation;
  state.permissions = msg.permissions ?? [];

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

  const s = sig;
  call = new Call({
    iceServers: msg.iceServers ?? [],
    onCandidate: (c) => s.send(candidateMessage(c)),
    onStateChange: setConnectionState,
  });
  hook.pc = call.pc;
  setConnectionState(call.state());

  showView("call-view");
  // A new session: the server tells us about a running recording (and asks) right away.
  recordingUi.reset();
  updateControls();
  updateWaiting();
  // A reconnect starts a new session: tell the others what we had muted.
  if (state.micMuted) s.send({ type: "mute", kind: "audio", muted: true });
  if (state.camMuted) s.send({ type: "mute", kind: "video", muted: true });
  startPing();
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
  const sdp = await call.handleOffer(msg, { audio: local.audio, video: local.video });
  s.send({ type: "answer", sdp });
  call.answerSent();
  state.offers = call.offers;
  state.slots = msg.tracks ?? [];
  syncRemoteMedia();
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
  updateWaiting();
}

function onParticipantJoined(p) {
  const known = participants[p.id];
  participants[p.id] = { ...p, producers: known?.producers ?? {} };
  grid.upsert(p);
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
  lastError = msg;
  console.warn("teleconsult: server error", msg.code, msg.ref ?? "", msg.message ?? "");
  if (recordingUi.onError(msg)) return;
  toasts.show(errorText(msg), { kind: "error" });
}

function onBye(reason) {
  state.endReason = reason;
  const key = `bye.${reason}`;
  const text = t(key);
  end(text === key ? t("end.reason", { reason }) : text);
}

function onClose(ev) {
  state.ws = "closed";
  stopPing();
  if (state.phase === "ended") return;
  teardownCall();
  if (ev.code === 4001 || ev.code === 4003) {
    // Token or admission refused: retrying cannot help.
    end(lastError ? errorText(lastError) : ev.reason || t("call.ws_failed"));
    return;
  }
  if (state.phase === "call") {
    grid.clearRemote();
    for (const id of Object.keys(participants)) if (!participants[id].self) delete participants[id];
  }
  state.phase = state.phase === "join" ? "join" : "reconnecting";
  setBanner(reconnectAttempts >= 5 ? t("call.ws_failed") : t("call.ws_lost"));
  if (state.phase === "reconnecting") scheduleReconnect();
}

// ------------------------------------------------------------------ call state

function teardownCall() {
  recordingUi.reset();
  call?.close();
  call = null;
  hook.pc = null;
  if (state.connection !== "new") setConnectionState("closed");
}

function setConnectionState(s) {
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
  stopPing();
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  reconnectTimer = null;
  sig?.close();
  teardownCall();
  stopLocalMedia();
  setBanner(null);
  for (const id of [...grid.tiles.keys()]) grid.remove(id);
  $("end-message").textContent = text;
  $("conn-state").hidden = true;
  $("end-recordings-btn").hidden = !canViewRecordings();
  showView("end-view");
}

function startPing() {
  stopPing();
  pingTimer = setInterval(() => sig?.send({ type: "ping", ts: Date.now() }), PING_INTERVAL_MS);
}

function stopPing() {
  if (pingTimer !== null) clearInterval(pingTimer);
  pingTimer = null;
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

function updateControls() {
  $("recordings-btn").hidden = !canViewRecordings();
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
$("rejoin-btn").addEventListener("click", () => window.location.reload());
$("recordings-btn").addEventListener("click", () => panel.open());
$("end-recordings-btn").addEventListener("click", () => panel.open());
window.addEventListener("pagehide", () => {
  if (state.phase === "call") sig?.send({ type: "leave" });
});

showView("join-view");
if (params.get("autojoin") === "1" || state.kiosk) join();
