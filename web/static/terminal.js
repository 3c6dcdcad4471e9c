// The nursing-home terminal (/terminal): pair once, then wait for calls, for ever.
//
// Unpaired: ask the server for a pairing code, show it, poll with the pairing's ticket until
// a site admin has entered the code; the answer sets the device credential (an HttpOnly
// cookie: this script never sees it). Paired: keep the event stream open (Server-Sent
// Events with heartbeats), show the home screen, ring on a call and answer with one large
// button, or by itself after a visible countdown when the home turned auto-answer on.
// Whatever breaks (power, network, the server restarting) the page says so plainly and
// tries again by itself; a 401 means the terminal was revoked: it shows the pairing code.

import { $, makeTranslator } from "./ui.js";

const boot = JSON.parse($("boot").textContent);
const t = makeTranslator(boot.messages);
const lang = boot.lang;

const POLL_MS = 2000;
const RETRY_MAX_MS = 15000;
// No heartbeat for this long: the stream is dead even if the browser has not noticed.
const SILENCE_MS = 40000;

const state = {
  view: "starting",
  conn: "connecting",
  terminal: null,
  ring: null,
  retryMs: 1000,
  source: null,
  silence: null,
  countdown: null,
};
// What the tests and a person debugging can read.
window.teleconsultTerminal = state;

function show(view) {
  state.view = view;
  $("terminal").dataset.view = view;
  for (const name of ["pairing", "home", "ringing"]) {
    $(`terminal-${name}`).hidden = name !== view;
  }
}

function setConn(conn) {
  state.conn = conn;
  $("terminal-conn").dataset.conn = conn;
  $("terminal-conn-text").textContent = t(`terminal.state.${conn}`);
}

async function api(path, body) {
  const init = body === undefined
    ? { credentials: "same-origin" }
    : {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      };
  return fetch(path, init);
}

// ------------------------------------------------------------------ pairing

let pairTimer = null;

async function pair(again) {
  closeStream();
  show("pairing");
  $("terminal-unpaired").hidden = !again;
  let pairing;
  try {
    const r = await api("/api/terminal/pairings", {});
    if (!r.ok) throw new Error(`pairing ${r.status}`);
    pairing = await r.json();
    setConn("online");
  } catch {
    setConn("offline");
    pairTimer = setTimeout(() => pair(again), backoff());
    return;
  }
  state.retryMs = 1000;
  $("pair-code").textContent = `${pairing.code.slice(0, 3)} ${pairing.code.slice(3)}`;
  $("pair-code").dataset.code = pairing.code;
  poll(pairing.ticket);
}

async function poll(ticket) {
  pairTimer = null;
  let answer = null;
  try {
    const r = await api("/api/terminal/pairings/collect", { ticket });
    if (r.status === 404) return pair(false);
    if (r.ok) answer = await r.json();
    setConn(r.ok ? "online" : "offline");
  } catch {
    setConn("offline");
  }
  if (answer?.state === "paired") {
    state.terminal = answer.terminal;
    return connect();
  }
  if (answer?.state === "expired") return pair(false);
  pairTimer = setTimeout(() => poll(ticket), POLL_MS);
}

function backoff() {
  const ms = state.retryMs;
  state.retryMs = Math.min(state.retryMs * 2, RETRY_MAX_MS);
  return ms;
}

// ------------------------------------------------------------------ paired: the stream

function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
  if (state.silence) clearTimeout(state.silence);
  state.silence = null;
}

function alive() {
  if (state.silence) clearTimeout(state.silence);
  state.silence = setTimeout(lost, SILENCE_MS);
}

function connect() {
  closeStream();
  if (state.view !== "ringing") showHome();
  setConn("connecting");
  const source = new EventSource("/api/terminal/events");
  state.source = source;
  source.addEventListener("hello", (ev) => {
    state.terminal = JSON.parse(ev.data);
    state.retryMs = 1000;
    setConn("online");
    alive();
    if (state.view !== "ringing") showHome();
  });
  source.addEventListener("heartbeat", alive);
  source.addEventListener("ring", (ev) => { alive(); ring(JSON.parse(ev.data)); });
  source.addEventListener("settings", (ev) => {
    alive();
    if (state.terminal) state.terminal.auto_answer = JSON.parse(ev.data).autoAnswer;
  });
  source.addEventListener("revoked", () => {
    closeStream();
    stopCountdown();
    stopTone();
    state.ring = null;
    pair(true);
  });
  source.addEventListener("error", lost);
  // EventSource gives no status on failure: find out whether we are still paired.
  window.setTimeout(() => { if (state.source === source) alive(); }, 0);
}

// GET /api/terminal/me: 200 (paired), 401 "revoked" (a credential the server refuses),
// 401 "unpaired" (none), or 0 (no network, the server down).
async function whoAmI() {
  try {
    const r = await api("/api/terminal/me");
    const body = await r.json().catch(() => ({}));
    if (r.ok) state.terminal = body;
    return { status: r.status, error: body.error };
  } catch {
    return { status: 0 };
  }
}

async function lost() {
  closeStream();
  setConn("offline");
  const { status } = await whoAmI();
  if (status === 401) return pair(true);
  setTimeout(connect, status === 200 ? 0 : backoff());
}

// ------------------------------------------------------------------ home screen

function showHome() {
  show("home");
  $("terminal-site").textContent = state.terminal?.site ?? "";
  tick();
}

function tick() {
  const now = new Date();
  $("terminal-clock").textContent = now.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
  $("terminal-date").textContent = now.toLocaleDateString(lang, {
    weekday: "long", year: "numeric", month: "long", day: "numeric",
  });
}
setInterval(tick, 1000);

// ------------------------------------------------------------------ ringing

// A ring a resident hears across the room: two tones every two seconds (Web Audio, nothing
// to download), and the caller announced once by speech where the device can speak.
let tone = null;

function startTone() {
  stopTone();
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  const audio = new Ctx();
  const beep = () => {
    for (const [freq, at] of [[880, 0], [660, 0.45]]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.3, audio.currentTime + at);
      gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + at + 0.4);
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + at);
      osc.stop(audio.currentTime + at + 0.4);
    }
  };
  beep();
  tone = { audio, timer: setInterval(beep, 2000) };
  state.tone = audio.state;
  audio.onstatechange = () => { state.tone = audio.state; };
}

function stopTone() {
  if (!tone) return;
  clearInterval(tone.timer);
  tone.audio.onstatechange = null;
  tone.audio.close().catch(() => {});
  tone = null;
  state.tone = null;
  if (window.speechSynthesis) window.speechSynthesis.cancel();
}

function announce(text) {
  if (!window.speechSynthesis || !window.SpeechSynthesisUtterance) return;
  const utterance = new SpeechSynthesisUtterance(text);
  utterance.lang = lang;
  utterance.rate = 0.9;
  window.speechSynthesis.speak(utterance);
}

function ring(event) {
  if (state.ring?.call === event.call) return;
  stopCountdown();
  state.ring = event;
  show("ringing");
  $("terminal-caller").textContent = event.caller.name;
  const roleKey = `role.${event.caller.role}`;
  const role = t(roleKey);
  $("terminal-caller-role").textContent = role === roleKey ? "" : role;
  startTone();
  announce(`${event.caller.name} ${role === roleKey ? "" : role} ${t("terminal.ring.calling")}`);
  const seconds = Number(event.autoAnswer) || 0;
  $("terminal-countdown").hidden = seconds <= 0;
  if (seconds > 0) countdown(seconds);
  // Nobody answered: the call is withdrawn on the server after as long; stop ringing here.
  const call = event.call;
  setTimeout(() => {
    if (state.ring?.call !== call) return;
    stopCountdown();
    stopTone();
    state.ring = null;
    showHome();
  }, (Number(event.ringSeconds) || 60) * 1000);
  $("terminal-answer").focus();
}

function countdown(seconds) {
  let left = seconds;
  const render = () => {
    $("terminal-countdown").textContent = t("terminal.auto", { n: left });
    $("terminal-countdown").dataset.left = String(left);
  };
  render();
  state.countdown = setInterval(() => {
    left -= 1;
    render();
    if (left <= 0) {
      stopCountdown();
      answer(true);
    }
  }, 1000);
}

function stopCountdown() {
  if (state.countdown) clearInterval(state.countdown);
  state.countdown = null;
}

async function answer(auto) {
  const call = state.ring;
  if (!call) return;
  stopCountdown();
  stopTone();
  state.ring = null;
  try {
    await api(`/api/terminal/calls/${encodeURIComponent(call.call)}/answer`, { auto });
  } catch {
    // The call page joins with the token whatever became of this note.
  }
  closeStream();
  const query = new URLSearchParams({ kiosk: "1", terminal: "1", lang });
  window.location.assign(`${call.join}?${query}`);
}

async function decline() {
  const call = state.ring;
  if (!call) return;
  stopCountdown();
  stopTone();
  state.ring = null;
  showHome();
  try {
    await api(`/api/terminal/calls/${encodeURIComponent(call.call)}/decline`, {});
  } catch {
    // Unanswered, the call stops ringing by itself.
  }
}

$("terminal-answer").addEventListener("click", () => answer(false));
$("terminal-decline").addEventListener("click", decline);

// ------------------------------------------------------------------ start

(async () => {
  const { status, error } = await whoAmI();
  if (status === 401) pair(error === "revoked");
  else connect();
})();
