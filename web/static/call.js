// One RTCPeerConnection per participant, for both directions; the server is the only
// offerer. Each offer says, per m-line (mid), whether it carries our own track ("publish"),
// someone else's ("consume") or nothing ("idle"). What we receive is labelled by mid only.
// Each m-line has a source too: the camera and microphone, or an extra video track
// ("screen", "camera2"; screenshare.js), which rides an m-line of its own.

import { publishTemporalLayers } from "./layers.js";

// Sources that are not a participant's main camera or microphone.
export const EXTRA_SOURCES = ["screen", "camera2"];

export class Call {
  /**
   * @param {{iceServers: RTCIceServer[],
   *          onCandidate: (c: RTCIceCandidate|null) => void,
   *          onStateChange: (state: string) => void}} opts
   */
  constructor({ iceServers, relayOnly, onCandidate, onStateChange }) {
    // bundlePolicy stays "balanced" (the default): as the answerer we follow the server's
    // BUNDLE group anyway, and "max-bundle" would refuse an offer with no m-line yet.
    this.pc = new RTCPeerConnection({
      iceServers: iceServers ?? [],
      iceTransportPolicy: relayOnly ? "relay" : "all",
      rtcpMuxPolicy: "require",
    });
    this.onCandidate = onCandidate;
    this.onStateChange = onStateChange;
    /** @type {Map<string, {mid: string, kind: string, role: string, participantId?: string, producerId?: string}>} */
    this.slots = new Map();
    // Candidates wait until our first answer has been sent, so the server never sees a
    // candidate for a description it does not have yet.
    this.pendingCandidates = [];
    this.answered = false;
    this.offers = 0;
    // What our camera publishes with (layers.js): "L1T3", "L1T2", "none"; null before.
    this.temporalLayers = null;

    this.pc.addEventListener("icecandidate", (ev) => {
      // An empty candidate string is Chrome's per-generation end marker; the null event
      // that follows it is the one we forward as end-of-candidates.
      if (ev.candidate && !ev.candidate.candidate) return;
      if (this.answered) this.onCandidate(ev.candidate);
      else this.pendingCandidates.push(ev.candidate);
    });
    const report = () => this.onStateChange(this.state());
    this.pc.addEventListener("connectionstatechange", report);
    this.pc.addEventListener("iceconnectionstatechange", report);
  }

  /** "new" | "connecting" | "connected" | "disconnected" | "failed" | "closed" */
  state() {
    const pc = this.pc;
    if (pc.connectionState) return pc.connectionState;
    // Older engines without connectionState: map the ICE state.
    const ice = pc.iceConnectionState;
    if (ice === "checking") return "connecting";
    if (ice === "completed") return "connected";
    return ice;
  }

  /**
   * Apply one server offer and return our answer's SDP.
   * @param {{sdp: string, tracks: Array<{mid: string, kind: string, role: string,
   *          participantId?: string, producerId?: string}>}} offer
   * @param {{audio: MediaStreamTrack|null, video: MediaStreamTrack|null,
   *          screen?: MediaStreamTrack|null, camera2?: MediaStreamTrack|null}} localTracks
   */
  async handleOffer(offer, localTracks) {
    const pc = this.pc;
    await pc.setRemoteDescription({ type: "offer", sdp: withoutEmptyBundle(offer.sdp) });
    const byMid = new Map();
    for (const tr of pc.getTransceivers()) {
      if (tr.mid !== null) byMid.set(tr.mid, tr);
    }
    for (const slot of offer.tracks ?? []) {
      const tr = byMid.get(slot.mid);
      if (!tr || tr.currentDirection === "stopped" || tr.stopped) continue;
      if (slot.role === "publish") {
        const extra = EXTRA_SOURCES.includes(slot.source);
        const track = localTracks[extra ? slot.source : slot.kind] ?? null;
        if (tr.sender.track !== track) await tr.sender.replaceTrack(track);
        tr.direction = track ? "sendonly" : "inactive";
      } else if (slot.role === "consume") {
        tr.direction = "recvonly";
      } else {
        tr.direction = "inactive";
        // An extra track that stopped: its m-line idles until the next one reuses it.
        if (tr.sender.track) await tr.sender.replaceTrack(null);
      }
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    for (const slot of offer.tracks ?? []) {
      const tr = byMid.get(slot.mid);
      if (slot.role === "publish" && slot.kind === "video" && tr?.sender.track) {
        const mode = await publishTemporalLayers(tr.sender);
        if (!EXTRA_SOURCES.includes(slot.source)) this.temporalLayers = mode;
      }
    }
    this.slots = new Map((offer.tracks ?? []).map((s) => [s.mid, s]));
    this.offers += 1;
    return pc.localDescription.sdp;
  }

  /** Called once the answer is on the wire: release the candidates gathered meanwhile. */
  answerSent() {
    if (this.answered) return;
    this.answered = true;
    for (const c of this.pendingCandidates.splice(0)) this.onCandidate(c);
  }

  /** participantId -> the receiver tracks of its consume slots (audio and video). */
  remoteTracks() {
    const result = new Map();
    const byMid = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid !== null) byMid.set(tr.mid, tr);
    }
    for (const slot of this.slots.values()) {
      if (slot.role !== "consume" || !slot.participantId) continue;
      if (EXTRA_SOURCES.includes(slot.source)) continue; // shown apart (extraTracks)
      const tr = byMid.get(slot.mid);
      if (!tr || !tr.receiver.track) continue;
      if (!result.has(slot.participantId)) result.set(slot.participantId, []);
      result.get(slot.participantId).push(tr.receiver.track);
    }
    return result;
  }

  /** The extra video tracks received: [{participantId, producerId, source, track}]. */
  extraTracks() {
    const byMid = new Map();
    for (const tr of this.pc.getTransceivers()) {
      if (tr.mid !== null) byMid.set(tr.mid, tr);
    }
    const result = [];
    for (const slot of this.slots.values()) {
      if (slot.role !== "consume" || !EXTRA_SOURCES.includes(slot.source)) continue;
      const tr = byMid.get(slot.mid);
      if (!tr || !tr.receiver.track) continue;
      const { participantId, producerId, source } = slot;
      result.push({ participantId, producerId, source, track: tr.receiver.track });
    }
    return result;
  }

  close() {
    try {
      this.pc.close();
    } catch {
      // already closed
    }
  }
}

// An offer with no m-line yet (an observer alone in the room) may carry "a=group:BUNDLE"
// with no mid at all, which Chrome rejects; such a group means nothing, so drop it.
export function withoutEmptyBundle(sdp) {
  return sdp.replace(/^a=group:BUNDLE[ \t]*\r?\n/gm, "");
}
