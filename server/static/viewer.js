// Fathom viewer: bird's-eye view of a frame's points with label boxes and passive-sonar bearing
// rays (coloured by height, or by segmentation class; prisms tried on it: viewer_segmentation.js),
// plus a camera image with the frame's projected points, boxes and bearings. Plain JS modules, no
// dependencies, same-origin only.
import { Segmentation } from "./viewer_segmentation.js";

const state = { scene: null, token: null, frame: 0, lod: 0, camera: null, drawn: 0 };
window.fathomViewer = { ready: false, points: 0, boxes: 0, projected: 0, bearings: 0, error: null,
                        classes: 0, labelled: 0, selected: null, prism: null, applied: null, segMessage: null };
const PEAK_COLOUR = "#00e5ff", TRACK_COLOUR = "#ff40ff"; // bearing rays: record peaks, labelled tracks
const BEV_RANGE_M = 60; // metres from the ego to the edge of the bird's-eye view
const view = { xyz: null, boxes: [], bearings: null }; // the frame in the bird's-eye view
let seg = null; // the segmentation tools (set in main, before anything is drawn)

function $(id) { return document.getElementById(id); }

// The bird's-eye view's pixels ↔ ego x, y (metres): ego x forward → canvas up, ego y left → canvas left.
function bevTransform(canvas) {
  const W = canvas.width, H = canvas.height, s = W / (2 * BEV_RANGE_M);
  return { toPx: (x, y) => [W / 2 - y * s, H / 2 - x * s], toEgo: (u, v) => [(H / 2 - v) / s, (W / 2 - u) / s] };
}
const bev = bevTransform($("bev"));

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
  if (isError) window.fathomViewer.error = text;
}

// The server's reason for an error response: its "detail" (a message, or the first invalid field).
async function problem(res) {
  try {
    const detail = (await res.json()).detail;
    if (typeof detail === "string") return `: ${detail}`;
    if (Array.isArray(detail) && detail.length) return `: ${detail[0].loc.join(".")}: ${detail[0].msg}`;
  } catch (e) { /* not JSON: the status alone */ }
  return "";
}

// A request with the bearer token; init: {method, json (the body), headers}.
async function api(path, kind, init = {}) {
  const headers = { Authorization: "Bearer " + state.token, ...init.headers };
  const opts = { method: init.method || "GET", headers };
  if (init.json !== undefined) {
    headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(init.json);
  }
  const res = await fetch(path, opts);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}${await problem(res)}`);
  if (kind === "json") return res.json();
  if (kind === "blob") return res.blob();
  return res.arrayBuffer();
}

// A link's ?token= is read once, kept in this tab's sessionStorage and removed from the address
// bar (history, bookmarks, shared screenshots); the token then travels only as a bearer header.
function token() {
  const url = new URL(location.href);
  const fromLink = url.searchParams.get("token");
  if (fromLink !== null) {
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  let t = fromLink || sessionStorage.getItem("fathom-token");
  if (!t) t = window.prompt("Fathom access token");
  if (t) sessionStorage.setItem("fathom-token", t);
  return t;
}

// Box footprint corners (ego frame): centre, size (l, w), yaw from the quaternion (w, x, y, z).
function footprint(box) {
  const [w, x, y, z] = box.rotation;
  const yaw = Math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z));
  const c = Math.cos(yaw), s = Math.sin(yaw), l = box.size[0] / 2, wd = box.size[1] / 2;
  return [[l, wd], [l, -wd], [-l, -wd], [-l, wd]].map(([u, v]) =>
    [box.center[0] + c * u - s * v, box.center[1] + s * u + c * v]);
}

// Bearing rays (ego frame: origin and segment end) as lines, a track's id beside it; returns how many.
function drawBearings(ctx, toPx, bearings) {
  const rays = bearings.arrays.flatMap(a => a.peaks || []).concat(bearings.tracks.filter(t => !t.error));
  for (const ray of rays) {
    const track = ray.kind === "track";
    const [u0, v0] = toPx(ray.origin[0], ray.origin[1]), [u1, v1] = toPx(ray.end[0], ray.end[1]);
    ctx.strokeStyle = ctx.fillStyle = track ? TRACK_COLOUR : PEAK_COLOUR;
    ctx.lineWidth = track ? 2 : 1;
    ctx.beginPath();
    ctx.moveTo(u0, v0);
    ctx.lineTo(u1, v1);
    ctx.stroke();
    if (track) {
      const [u, v] = toPx(ray.origin[0] + 40 * ray.direction[0], ray.origin[1] + 40 * ray.direction[1]);
      ctx.fillText(ray.track_id, u + 3, v - 3);
    }
  }
  return rays.length;
}

// Points (ego x y z float32 triples) coloured by height, or by colours (4 bytes per point, alpha
// 0: by height), boxes, bearing rays and the segmentation overlay; returns the points drawn.
function drawBev(xyz, boxes, bearings, colours) {
  const canvas = $("bev"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, toPx = bev.toPx;
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, W, H);
  const img = ctx.getImageData(0, 0, W, H), px = img.data;
  let n = 0;
  for (let i = 0, j = 0; i + 2 < xyz.length; i += 3, j++) {
    const [u, v] = toPx(xyz[i], xyz[i + 1]);
    const ui = u | 0, vi = v | 0;
    if (ui < 0 || vi < 0 || ui >= W || vi >= H) continue;
    const k = (vi * W + ui) * 4;
    if (colours && colours[4 * j + 3]) {
      px[k] = colours[4 * j]; px[k + 1] = colours[4 * j + 1]; px[k + 2] = colours[4 * j + 2];
    } else {
      const h = Math.max(0, Math.min(1, (xyz[i + 2] + 2) / 6)); // colour by height, -2..4 m
      px[k] = 80 + 175 * h; px[k + 1] = 200 - 80 * h; px[k + 2] = 255 - 200 * h;
    }
    px[k + 3] = 255;
    n++;
  }
  ctx.putImageData(img, 0, 0);
  ctx.strokeStyle = "#ffcc00";
  ctx.lineWidth = 2;
  for (const box of boxes) {
    const pts = footprint(box).map(([x, y]) => toPx(x, y));
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (const p of pts.slice(1)) ctx.lineTo(p[0], p[1]);
    ctx.closePath();
    ctx.stroke();
    ctx.fillStyle = "#ffcc00";
    ctx.fillText(`${box.track_id} (${box.points_in_box ?? "?"})`, pts[0][0] + 3, pts[0][1] - 3);
  }
  window.fathomViewer.bearings = drawBearings(ctx, toPx, bearings);
  ctx.fillStyle = "#f33";
  ctx.fillRect(W / 2 - 3, H / 2 - 3, 6, 6); // the ego
  seg.drawOverlay(ctx);
  return n;
}

function drawView() {
  if (view.xyz) window.fathomViewer.points = drawBev(view.xyz, view.boxes, view.bearings, seg.colours);
}

// The frame's bearing rays in one camera: the polylines the bearings route projected.
function drawCameraBearings(ctx, bearings, camera, width) {
  const seen = bearings.cameras.find(c => c.camera === camera);
  for (const ray of seen ? seen.rays : []) {
    ctx.strokeStyle = ray.kind === "track" ? TRACK_COLOUR : PEAK_COLOUR;
    ctx.lineWidth = Math.max(1, width / 800) * (ray.kind === "track" ? 2 : 1);
    for (const path of ray.paths) {
      ctx.beginPath();
      ctx.moveTo(path[0][0], path[0][1]);
      for (const p of path.slice(1)) ctx.lineTo(p[0], p[1]);
      ctx.stroke();
    }
  }
}

async function drawCamera(frameEntry, bearings) {
  const panel = $("camera-panel");
  const cam = state.camera;
  if (!cam || !(cam in frameEntry.cameras)) { panel.hidden = true; return; }
  panel.hidden = false;
  $("camera-title").textContent = `camera ${cam}`;
  const base = `/v1/scenes/${state.scene.id}/frames/${state.frame}`;
  const blob = await api(`${base}/images/${encodeURIComponent(cam)}`, "blob");
  const image = $("camera-image");
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(blob);
  const overlay = $("camera-overlay");
  const info = state.scene.cameras.find(c => c.name === cam);
  overlay.width = info.width; overlay.height = info.height;
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  let proj;
  try {
    proj = await api(`${base}/projection/${encodeURIComponent(cam)}?lod=${Math.max(state.lod, 1)}`, "json");
  } catch (e) {
    drawCameraBearings(ctx, bearings, cam, info.width);
    return; // no projection for this frame (e.g. no level of detail): the image and its bearings
  }
  const r = Math.max(1, info.width / 800);
  for (let i = 0; i < proj.u.length; i++) {
    const h = Math.max(0, Math.min(1, proj.depth[i] / 60));
    ctx.fillStyle = `hsl(${Math.round(240 * h)}, 100%, 55%)`;
    ctx.fillRect(proj.u[i] - r / 2, proj.v[i] - r / 2, r, r);
  }
  ctx.strokeStyle = "#ffcc00";
  ctx.lineWidth = 2 * r;
  for (const box of proj.boxes) {
    for (const path of box.paths) {
      ctx.beginPath();
      ctx.moveTo(path[0][0], path[0][1]);
      for (const p of path.slice(1)) ctx.lineTo(p[0], p[1]);
      ctx.stroke();
    }
  }
  drawCameraBearings(ctx, bearings, cam, info.width);
  window.fathomViewer.projected = proj.u.length;
}

async function showFrame() {
  const f = state.scene.frames[state.frame];
  if (!f) { setStatus("this scene has no frames", true); return; }
  $("frame-label").textContent = `${f.index} / ${state.scene.frames.length - 1}`;
  setStatus("loading…");
  const base = `/v1/scenes/${state.scene.id}/frames/${f.index}`;
  const lod = Math.min(state.lod, f.lod_points.length);
  const [buf, cub, bearings] = await Promise.all([
    api(`${base}/points?format=raw&frame=ego&lod=${lod}`, "bin"),
    api(`${base}/cuboids?frame=ego`, "json"),
    api(`${base}/bearings?frame=ego`, "json"),
  ]);
  Object.assign(view, { xyz: new Float32Array(buf), boxes: cub.boxes, bearings });
  await seg.show(f.index, lod, view.xyz.length / 3).catch(e => seg.message(String(e.message || e), true));
  drawView();
  const n = window.fathomViewer.points;
  window.fathomViewer.boxes = cub.boxes.length;
  await drawCamera(f, bearings);
  const rays = window.fathomViewer.bearings ? `, ${window.fathomViewer.bearings} bearing rays` : "";
  setStatus(`${n} points drawn, ${cub.boxes.length} boxes (labels r${cub.revision})${rays}`);
  window.fathomViewer.ready = true;
}

function fill(select, values, labels) {
  select.innerHTML = "";
  values.forEach((v, i) => {
    const o = document.createElement("option");
    o.value = v; o.textContent = labels ? labels[i] : v;
    select.appendChild(o);
  });
}

async function main() {
  const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  state.token = token();
  try {
    state.scene = await api(`/v1/scenes/${encodeURIComponent(id)}`, "json");
  } catch (e) {
    setStatus(String(e.message || e), true);
    return;
  }
  $("title").textContent = `Fathom · ${state.scene.id}`;
  seg = new Segmentation({ api, $, bev, redraw: drawView, scene: () => state.scene, report: window.fathomViewer });
  seg.loadClasses().catch(e => seg.message(String(e.message || e), true));
  const frameInput = $("frame");
  frameInput.max = Math.max(0, state.scene.frames.length - 1);
  const maxLod = Math.max(0, ...state.scene.frames.map(f => f.lod_points.length));
  fill($("lod"), [...Array(maxLod + 1).keys()], [...Array(maxLod + 1).keys()].map(l => l === 0 ? "full" : `lod ${l}`));
  fill($("camera"), state.scene.cameras.map(c => c.name));
  state.camera = state.scene.cameras.length ? state.scene.cameras[0].name : null;
  if (!state.camera) $("camera-panel").hidden = true;
  const redraw = () => showFrame().catch(e => setStatus(String(e.message || e), true));
  frameInput.addEventListener("input", () => { state.frame = +frameInput.value; redraw(); });
  $("lod").addEventListener("change", e => { state.lod = +e.target.value; redraw(); });
  $("camera").addEventListener("change", e => { state.camera = e.target.value; redraw(); });
  redraw();
}

main();
