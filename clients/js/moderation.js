// Moderator tools for the Fablecast JS SDK: `moderate` actions with their answers,
// and the room's moderation state. Extends a FablecastClient (fablecast.js); no build step.
//
//   import { FablecastClient } from "/js/fablecast.js";
//   import { Moderator } from "/js/moderation.js";
//   const client = new FablecastClient(url, { token: moderatorToken });
//   const mod = new Moderator(client);          // sends `watch` on every (re)connect
//   mod.addEventListener("state", (e) => render(e.detail));   // mod_state
//   const answer = await mod.act("veto", { window: 3, option: 1 });
//   if (!answer.ok) show(answer.code, answer.message);
//
// Contract (docs/moderation.md, docs/protocol.md "moderate"):
// - `act(action, fields)` sends one `moderate` with a fresh `ref` and resolves with
//   the answer carrying that ref: {ok: true, detail} for `mod_ack`, {ok: false,
//   code, message} for `error`; {ok: false, code: "not_sent"} when not connected,
//   {ok: false, code: "timeout"} when no answer came within `timeoutMs`. It never rejects.
// - After each welcome it sends `watch`, so `state` events follow every change
//   (and a reconnect picks up where it left off). A refused watch (a viewer's or
//   overlay's token, another room's token) is a "denied" event: detail = the error.

export const MOD_ACTIONS = Object.freeze([
  "watch", "pause", "resume", "kill", "close_vote", "veto", "approval",
  "approve", "edit", "reject", "inject", "mute", "unmute", "ban", "unban",
]);

/** Moderator actions over one room's FablecastClient. */
export class Moderator extends EventTarget {
  /**
   * @param {import("./fablecast.js").FablecastClient} client a client whose token is a moderator's
   * @param {{timeoutMs?: number}} [options]
   */
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.timeoutMs = options.timeoutMs ?? 5000;
    /** The latest `mod_state`, or null before the first. */
    this.state = null;
    /** False once the server refused `watch` (not a moderator here). */
    this.allowed = null;
    this._n = 0;
    /** @type {Map<string, (answer: object) => void>} */
    this._pending = new Map();
    client.addEventListener("mod_ack", (e) => this._settle(e.detail.ref, { ok: true, detail: e.detail.detail, action: e.detail.action }));
    client.addEventListener("error", (e) => {
      const msg = e.detail;
      if (msg && typeof msg.ref === "string" && msg.ref.startsWith("mod-")) {
        this._settle(msg.ref, { ok: false, code: msg.code, message: msg.message });
      }
    });
    client.addEventListener("mod_state", (e) => {
      this.state = e.detail;
      this.allowed = true;
      this.dispatchEvent(new CustomEvent("state", { detail: e.detail }));
    });
    client.addEventListener("welcome", () => {
      this.act("watch").then((answer) => {
        if (!answer.ok && answer.code === "forbidden") {
          this.allowed = false;
          this.dispatchEvent(new CustomEvent("denied", { detail: answer }));
        }
      });
    });
  }

  /**
   * Send one moderator action; resolves with its answer (see the module doc).
   * @param {string} action one of MOD_ACTIONS
   * @param {object} [fields] hold, window, option, text, participant, on, reason
   * @returns {Promise<{ok: boolean, detail?: string, code?: string, message?: string}>}
   */
  act(action, fields = {}) {
    this._n += 1;
    const ref = `mod-${this._n}`;
    return new Promise((resolve) => {
      const sent = this.client._send({ type: "moderate", action, ref, ...fields });
      if (!sent) {
        resolve({ ok: false, code: "not_sent", message: "not connected" });
        return;
      }
      const timer = setTimeout(() => this._settle(ref, { ok: false, code: "timeout", message: "no answer" }), this.timeoutMs);
      this._pending.set(ref, (answer) => { clearTimeout(timer); resolve(answer); });
    });
  }

  _settle(ref, answer) {
    const done = this._pending.get(ref);
    if (done) {
      this._pending.delete(ref);
      done(answer);
    }
  }
}
