// Publish video with temporal layers (VP8 "L1T3": 7.5 + 7.5 + 15 fps), so the media Worker
// can send a subscriber on a weak link fewer frames per second without asking this camera
// for anything. Chromium takes `scalabilityMode` on the sender's encodings once the
// m-line is negotiated; a browser that refuses L1T3 is asked for L1T2, and one that
// refuses both (or has no such setting) publishes as before: the Worker then fits weak
// links with still frames instead. Nothing here can break the call.

const MODES = ["L1T3", "L1T2"];

/**
 * @param {RTCRtpSender} sender the video sender of a publish m-line
 * @returns {Promise<string>} the mode in use: "L1T3", "L1T2" or "none"
 */
export async function publishTemporalLayers(sender) {
  if (!sender || !sender.track || sender.track.kind !== "video") return "none";
  let params;
  try {
    params = sender.getParameters();
  } catch {
    return "none";
  }
  const encoding = params.encodings?.[0];
  if (!encoding) return "none";
  if (MODES.includes(encoding.scalabilityMode)) return encoding.scalabilityMode;
  for (const mode of MODES) {
    try {
      params = sender.getParameters();
      params.encodings[0].scalabilityMode = mode;
      await sender.setParameters(params);
      const applied = sender.getParameters().encodings?.[0]?.scalabilityMode;
      if (applied === mode) return mode;
    } catch (err) {
      console.info("teleconsult: scalabilityMode", mode, "refused:", err?.name ?? err);
    }
  }
  return "none";
}
