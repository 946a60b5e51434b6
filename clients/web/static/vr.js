// The VR scene (three.js from npm, WebXR when the browser has it; a desktop browser
// works too): the story on a text panel, the ballot as panels to select (mouse,
// gaze dwell or controller), and a sky and light driven by the story's scene cues
// (time_of_day, weather, lighting). Until cues arrive the sky follows the mood.
// The HUD below mirrors the ballot as buttons: keyboard and screen-reader voting.
import * as THREE from "/js/node_modules/three/build/three.module.js";
import { $, connectRoom, connWords } from "/static/common.js";

const { client, state } = connectRoom();

// ---------------------------------------------------------------- sky from cues (pure)

const TIMES = {
  dawn: ["#2b3a67", "#f6a56b"], morning: ["#6fa6e0", "#e3eef8"], day: ["#3f8fdc", "#bfe0ff"],
  noon: ["#2f7fd6", "#cfe8ff"], afternoon: ["#4a90d9", "#f0d9a8"], dusk: ["#3b2a5a", "#f08a4b"],
  sunset: ["#41306b", "#ff8a3d"], evening: ["#1d2147", "#8a5a7a"], night: ["#050814", "#1b2340"],
  midnight: ["#02030a", "#0d1228"],
};
const WEATHER = {
  storm: ["#24272e", 0.65], rain: ["#55606e", 0.45], fog: ["#a0a6ad", 0.55], mist: ["#a0a6ad", 0.4],
  snow: ["#dfe6ee", 0.35], cloudy: ["#8a929c", 0.35], overcast: ["#7d858f", 0.45],
};
const LIGHTS = {
  warm: "#ffb36b", candle: "#ffb36b", candlelight: "#ffb36b", lantern: "#ffb36b", lanterns: "#ffb36b", fire: "#ff9a4d",
  cold: "#9fb8ff", moonlight: "#9fb8ff", moon: "#9fb8ff", neon: "#d06bff", eerie: "#7dffb0", bright: "#ffffff",
};

/** Find a known word of `table` in a free-text cue value ("light rain" -> rain). */
function lookup(table, value) {
  if (!value) return undefined;
  const words = String(value).toLowerCase().match(/[a-z]+/g) ?? [];
  for (const w of words) if (w in table) return table[w];
  return undefined;
}

/** The sky (zenith, horizon colours) and light of a cue; the mood tints it before cues come. */
export function skyFor(cue, mood) {
  let [top, horizon] = lookup(TIMES, cue?.time_of_day) ?? TIMES.dusk;
  const t = new THREE.Color(top), h = new THREE.Color(horizon);
  const w = lookup(WEATHER, cue?.weather);
  if (w) { const c = new THREE.Color(w[0]); t.lerp(c, w[1]); h.lerp(c, w[1]); }
  if (!cue && mood && mood.intensity > 0.5) {
    // No cue yet: warm for a happy room, cold for a fearful one, by a little.
    const tint = new THREE.Color(mood.valence >= 0 ? "#ffcf80" : "#5060a0");
    h.lerp(tint, Math.min(0.35, Math.abs(mood.valence) * 0.4));
  }
  const light = new THREE.Color(lookup(LIGHTS, cue?.lighting) ?? "#ffe2c0");
  const lit = String(cue?.lighting ?? "").toLowerCase();
  const intensity = /dim|dark|shadow/.test(lit) ? 0.45 : /bright|blazing/.test(lit) ? 1.4 : 1;
  return { top: `#${t.getHexString()}`, horizon: `#${h.getHexString()}`, light: `#${light.getHexString()}`, intensity };
}

// ---------------------------------------------------------------- canvas text

function wrap(ctx, text, maxWidth) {
  const lines = [];
  for (const para of text.split("\n")) {
    let line = "";
    for (const word of para.split(/\s+/)) {
      const next = line ? `${line} ${word}` : word;
      if (ctx.measureText(next).width > maxWidth && line) { lines.push(line); line = word; } else line = next;
    }
    lines.push(line);
  }
  return lines;
}

function textPanel(w, h, px, py) {
  const canvas = document.createElement("canvas");
  canvas.width = px; canvas.height = py;
  const texture = new THREE.CanvasTexture(canvas);
  texture.colorSpace = THREE.SRGBColorSpace;
  const mesh = new THREE.Mesh(new THREE.PlaneGeometry(w, h), new THREE.MeshBasicMaterial({ map: texture, transparent: true }));
  return { canvas, texture, mesh, ctx: canvas.getContext("2d") };
}

// ---------------------------------------------------------------- the scene

const sceneEl = $("scene");
let renderer = null;
try {
  renderer = new THREE.WebGLRenderer({ antialias: true });
} catch {
  renderer = null;
}
const scene = new THREE.Scene();
if (globalThis.fablecast) globalThis.fablecast.scene = scene;
/** A wider vertical field of view on portrait screens, so the panels fit across. */
const fov = () => (innerWidth < innerHeight ? 100 : 70);
const camera = new THREE.PerspectiveCamera(fov(), innerWidth / innerHeight, 0.05, 1000);
camera.position.set(0, 1.6, 0);
const ambient = new THREE.HemisphereLight("#ffffff", "#202030", 0.6);
const sun = new THREE.DirectionalLight("#ffe2c0", 1);
sun.position.set(3, 6, 2);
scene.add(ambient, sun);

const skyCanvas = document.createElement("canvas");
skyCanvas.width = 2; skyCanvas.height = 256;
const skyTexture = new THREE.CanvasTexture(skyCanvas);
skyTexture.colorSpace = THREE.SRGBColorSpace;
scene.add(new THREE.Mesh(new THREE.SphereGeometry(400, 32, 16), new THREE.MeshBasicMaterial({ map: skyTexture, side: THREE.BackSide })));
const ground = new THREE.Mesh(new THREE.CircleGeometry(40, 48), new THREE.MeshStandardMaterial({ color: "#2a2b30", roughness: 1 }));
ground.rotation.x = -Math.PI / 2;
scene.add(ground);

function paintSky() {
  const sky = skyFor(state.cue, state.mood);
  const ctx = skyCanvas.getContext("2d");
  const g = ctx.createLinearGradient(0, 0, 0, 256);
  g.addColorStop(0, sky.top); g.addColorStop(0.5, sky.horizon); g.addColorStop(1, "#101014");
  ctx.fillStyle = g; ctx.fillRect(0, 0, 2, 256);
  skyTexture.needsUpdate = true;
  sun.color.set(sky.light); sun.intensity = sky.intensity;
  scene.fog = /fog|mist/.test(String(state.cue?.weather ?? "")) ? new THREE.Fog(sky.horizon, 4, 40) : null;
  document.body.dataset.sky = sky.top;
  document.body.dataset.horizon = sky.horizon;
  document.body.dataset.cue = state.cue ? "yes" : "no";
  document.body.dataset.cueSeq = String(state.cue?.seq ?? "");
}

const story = textPanel(3.2, 1.6, 1024, 512);
story.mesh.position.set(0, 2.1, -3);
scene.add(story.mesh);
let storyDirty = true;
function paintStory() {
  const { ctx, canvas } = story;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "rgba(12,12,18,0.82)";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#f4f1ea";
  ctx.font = "30px Georgia, serif";
  const text = state.partial?.text || state.story.at(-1)?.text || state.notice()?.text || "…";
  const lines = wrap(ctx, text, canvas.width - 80).slice(-12);
  lines.forEach((l, i) => ctx.fillText(l, 40, 60 + i * 38));
  story.texture.needsUpdate = true;
}

/** Ballot panels: one mesh per option, userData.index; rebuilt per window. */
const ballotGroup = new THREE.Group();
ballotGroup.position.set(0, 1.05, -2.6);
scene.add(ballotGroup);
let hovered = null;
function paintBallot() {
  ballotGroup.clear();
  const ballot = state.ballot;
  if (!ballot) { sceneEl.dataset.panels = "0"; return; }
  const counts = state.tally?.counts ?? [];
  ballot.options.forEach((o, i) => {
    // Canvas sizes are powers of two: NPOT canvas textures stay blank on some GL stacks.
    const p = textPanel(2.0, 0.25, 1024, 128);
    const mine = state.myVote === o.index, hot = hovered === o.index;
    p.ctx.fillStyle = mine ? "#f2b33d" : hot ? "#3d4a6b" : "#1e2130";
    p.ctx.fillRect(0, 0, 1024, 128);
    p.ctx.strokeStyle = mine ? "#ffffff" : "#f2b33d";
    p.ctx.lineWidth = 6;
    p.ctx.strokeRect(3, 3, 1018, 122);
    p.ctx.fillStyle = mine ? "#1a1400" : "#ffffff";
    const label = `${o.index + 1}. ${o.text}`;
    let size = 52;
    do { p.ctx.font = `bold ${size}px system-ui, sans-serif`; size -= 2; } while (size > 26 && p.ctx.measureText(label).width > 860);
    p.ctx.fillText(label, 30, 82, 860);
    p.ctx.font = "bold 52px system-ui, sans-serif";
    p.ctx.fillText(String(counts[o.index] ?? 0), 920, 82, 90);
    p.texture.needsUpdate = true;
    p.mesh.position.set(0, -i * 0.32, 0);
    // UI panels draw over the scene (as a HUD does): the ground must never hide the vote.
    p.mesh.material.depthTest = false;
    p.mesh.renderOrder = 10;
    p.mesh.userData.index = o.index;
    ballotGroup.add(p.mesh);
  });
  sceneEl.dataset.panels = String(ballot.options.length);
}

// ---------------------------------------------------------------- selecting

const raycaster = new THREE.Raycaster();
function pick(origin, direction) {
  raycaster.set(origin, direction);
  const hit = raycaster.intersectObjects(ballotGroup.children, false)[0];
  return hit ? hit.object.userData.index : null;
}
function vote(index) {
  if (state.ballot && index !== null && index !== undefined) client.vote(state.ballot.window, index);
}
const pointer = new THREE.Vector2();
let drag = null;
let yaw = 0, pitch = 0;
sceneEl.addEventListener("pointerdown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
sceneEl.addEventListener("pointermove", (e) => {
  pointer.set((e.clientX / innerWidth) * 2 - 1, -(e.clientY / innerHeight) * 2 + 1);
  if (drag && (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 4)) {
    drag.moved = true;
    yaw -= e.movementX * 0.004; pitch = Math.max(-1.2, Math.min(1.2, pitch - e.movementY * 0.004));
  }
});
sceneEl.addEventListener("pointerup", () => {
  if (drag && !drag.moved) {
    raycaster.setFromCamera(pointer, camera);
    vote(pick(raycaster.ray.origin, raycaster.ray.direction));
  }
  drag = null;
});

// Gaze: looking at a panel for 1.5 s selects it (headsets without controllers).
let gaze = { index: null, since: 0 };
const forward = new THREE.Vector3();
function gazeTick(now) {
  const cam = renderer?.xr.isPresenting ? renderer.xr.getCamera() : camera;
  cam.getWorldDirection(forward);
  const origin = new THREE.Vector3().setFromMatrixPosition(cam.matrixWorld);
  const idx = pick(origin, forward);
  if (idx !== hovered) { hovered = idx; paintBallot(); }
  if (!renderer?.xr.isPresenting) return;
  if (idx !== gaze.index) gaze = { index: idx, since: now };
  else if (idx !== null && now - gaze.since > 1500) { vote(idx); gaze.since = now + 1e9; }
}

// Controllers: the trigger ("select") votes for the panel its ray points at.
function setUpControllers() {
  for (const i of [0, 1]) {
    const c = renderer.xr.getController(i);
    c.addEventListener("select", () => {
      const origin = new THREE.Vector3().setFromMatrixPosition(c.matrixWorld);
      const dir = new THREE.Vector3(0, 0, -1).applyQuaternion(new THREE.Quaternion().setFromRotationMatrix(c.matrixWorld));
      vote(pick(origin, dir));
    });
    scene.add(c);
  }
}

// ---------------------------------------------------------------- HUD (DOM mirror)

function renderHud() {
  $("vr-title").textContent = state.title || "Fablecast VR";
  const opts = $("vr-options");
  const ballot = state.ballot;
  if (!ballot) { opts.replaceChildren(); return; }
  const counts = state.tally?.counts ?? [];
  opts.replaceChildren(...ballot.options.map((o) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "option";
    b.setAttribute("aria-pressed", String(state.myVote === o.index));
    b.textContent = `${o.index + 1}. ${o.text} (${counts[o.index] ?? 0})`;
    b.addEventListener("click", () => vote(o.index));
    return b;
  }));
}
let hudText = "";
function renderHudText() {
  const text = state.partial?.text || state.story.at(-1)?.text || state.notice()?.text || "";
  const last = text.split(/(?<=[.!?])\s+/).slice(-2).join(" ");
  if (last !== hudText) { hudText = last; $("vr-text").textContent = last; }
}

client.addEventListener("status", (e) => { $("vr-status").textContent = connWords(e.detail); });
client.addEventListener("message", (e) => {
  const change = state.apply(e.detail);
  if (change === null) return;
  if (["reset", "text", "beat_start", "beat_end", "beat_abort", "narrator", "phase"].includes(change)) storyDirty = true;
  if (["reset", "ballot", "tally", "vote_result", "phase", "my_vote"].includes(change)) { paintBallot(); renderHud(); }
  if (change === "reset" || change === "cue" || (change === "mood" && !state.cue)) paintSky();
});

// ---------------------------------------------------------------- start

paintSky();
if (renderer) {
  renderer.setPixelRatio(Math.min(2, devicePixelRatio));
  renderer.setSize(innerWidth, innerHeight);
  renderer.xr.enabled = true;
  sceneEl.append(renderer.domElement);
  sceneEl.dataset.webgl = "1";
  setUpControllers();
  addEventListener("resize", () => {
    camera.aspect = innerWidth / innerHeight;
    camera.fov = fov();
    camera.updateProjectionMatrix();
    renderer.setSize(innerWidth, innerHeight);
  });
  let lastText = 0;
  renderer.setAnimationLoop((now) => {
    if (!renderer.xr.isPresenting) camera.rotation.set(pitch, yaw, 0, "YXZ");
    if (storyDirty && now - lastText > 100) { storyDirty = false; lastText = now; paintStory(); renderHudText(); }
    gazeTick(now);
    renderer.render(scene, camera);
  });
  navigator.xr?.isSessionSupported("immersive-vr").then((ok) => {
    if (!ok) return;
    const button = $("enter-vr");
    button.hidden = false;
    button.addEventListener("click", async () => {
      const session = await navigator.xr.requestSession("immersive-vr", { optionalFeatures: ["local-floor"] });
      renderer.xr.setSession(session);
    });
  }).catch(() => {});
} else {
  sceneEl.dataset.webgl = "0";
  $("vr-status").textContent = "3D is not available in this browser: the story and the vote are below.";
  setInterval(() => { if (storyDirty) { storyDirty = false; renderHudText(); } }, 200);
}
client.connect();
