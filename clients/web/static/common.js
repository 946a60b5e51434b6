// Shared by the pages: the room of this URL, a connected client, mood words.
import { FablecastClient, RoomState, roomUrl } from "/js/fablecast.js";

/** The room name in /watch/<room>, /overlay/<room>, /vr/<room>. */
export function roomFromPath(path = location.pathname) {
  const m = path.match(/^\/(?:watch|overlay|vr)\/([A-Za-z0-9_-]{1,64})\/?$/);
  return m ? m[1] : "demo";
}

/** A client for this page's room (codec from ?codec=), its RoomState, and the page's params. */
export function connectRoom({ storage = true } = {}) {
  const params = new URLSearchParams(location.search);
  const room = roomFromPath();
  let store = null;
  if (storage) {
    try { store = globalThis.localStorage; } catch { store = null; }
  }
  const client = new FablecastClient(roomUrl(room), {
    codec: params.get("codec") === "msgpack" ? "msgpack" : "json",
    storage: store,
  });
  const state = new RoomState();
  // Tests and the latency bench reach the client here (no inline script needed).
  globalThis.fablecast = { client, state, room };
  return { client, state, room, params };
}

/** Words for a mood: "tense", "joyful"...; valence/arousal quadrants, calm near zero. */
export function moodWord(mood) {
  if (!mood || mood.intensity < 0.5) return "calm";
  const { valence: v, arousal: a } = mood;
  if (Math.hypot(v, a) < 0.15) return "calm";
  if (v >= 0) return a >= 0 ? "excited" : "content";
  return a >= 0 ? "tense" : "gloomy";
}

export const REACTION_EMOJI = {
  joy: "😊", laugh: "😂", love: "❤️", surprise: "😮", fear: "😨", anger: "😠", sad: "😢", bored: "😐",
};

/** The strongest reaction of a mood, or null. */
export function topReaction(mood) {
  const entries = Object.entries(mood?.reactions ?? {});
  if (!entries.length) return null;
  return entries.sort((a, b) => b[1] - a[1])[0][0];
}

/** Element by id (throws if missing: a page/JS mismatch is a bug). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el;
}

/** Connection status words for people. */
export function connWords(detail) {
  switch (detail.state) {
    case "open": return "live";
    case "connecting": return "connecting";
    case "reconnecting": return "reconnecting…";
    case "closed": return detail.code === 4004 ? "no such room" : "disconnected";
    default: return detail.state;
  }
}
