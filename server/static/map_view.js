// Fathom map view: the scene's whole-sequence map in 3D (three.js, WebGL), its level-of-detail
// nodes streamed coarse to fine by screen-space error within a point budget. Each node is one
// byte range of the layer's octree.bin (its viewer part: positions on the node's grid, colour,
// intensity; see formats/octree.py); the hierarchy's pages are byte ranges of hierarchy.bin.
// Orbit (left drag), pan (right drag), zoom (wheel), "top view". ?map_budget=N caps the points.
import * as THREE from "./vendor/three.module.min.js";

const ENTRY_BYTES = 32;
const query = new URLSearchParams(location.search);
const BUDGET = Math.max(1000, Number(query.get("map_budget")) || 2_000_000);
const MIN_PX = 1.5; // a node's children load while its point spacing covers more pixels than this
const MAX_LOADS = 6; // node requests in flight
const state = window.fathomMap = {
  ready: false, available: null, idle: false, points: 0, nodes: 0, loadedNodes: 0, budget: BUDGET,
  bytes: 0, firstViewMs: null, firstViewBytes: null, error: null,
};
const t0 = performance.now();

function fail(e) {
  state.error = String(e && e.message || e);
  document.getElementById("map-status").textContent = state.error;
}

async function fetchBytes(url, first, size) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem("fathom-token") };
  if (size !== undefined) headers.Range = `bytes=${first}-${first + size - 1}`;
  const res = await fetch(url, { headers });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const buf = await res.arrayBuffer();
  state.bytes += buf.byteLength;
  return buf;
}

class Layer {
  constructor(info) {
    const m = this.meta = info.metadata;
    this.files = info.files;
    this.q = m.quantum_m;
    this.sideM = m.side_q * m.quantum_m;
    this.nodes = new Map(); // "l-x-y-z" → node
    this.root = null;
  }

  key(l, x, y, z) { return `${l}-${x}-${y}-${z}`; }

  // Entries of one hierarchy page: nodes, or pointers to the pages of their subtrees.
  async loadPage(offset, size) {
    const view = new DataView(await fetchBytes(this.files["hierarchy.bin"], offset, size));
    for (let o = 0; o + ENTRY_BYTES <= view.byteLength; o += ENTRY_BYTES) {
      const l = view.getInt32(o, true), x = view.getInt32(o + 4, true), y = view.getInt32(o + 8, true);
      const z = view.getInt32(o + 12, true), count = view.getInt32(o + 28, true);
      const k = this.key(l, x, y, z);
      let node = this.nodes.get(k);
      if (!node) {
        const s = this.sideM / 2 ** l;
        node = { key: k, level: l, children: [], object: null, loading: false, used: 0,
                 box: new THREE.Box3(new THREE.Vector3(x * s, y * s, z * s), new THREE.Vector3((x + 1) * s, (y + 1) * s, (z + 1) * s)) };
        this.nodes.set(k, node);
        const parent = l ? this.nodes.get(this.key(l - 1, x >> 1, y >> 1, z >> 1)) : null;
        if (parent) parent.children.push(node);
        else if (!l) this.root = node;
      }
      node.xyz = [x, y, z];
      node.pointer = count === -1 ? [Number(view.getBigUint64(o + 16, true)), view.getInt32(o + 24, true)] : null;
      if (count >= 0) { node.count = count; node.offset = Number(view.getBigUint64(o + 16, true)); }
    }
  }

  // A node's viewer part as a THREE.Points object (positions in metres from the cube's corner).
  async loadNode(node) {
    const n = node.count, w = this.meta.side_q / 2 ** node.level <= 65536 ? 2 : 4;
    const buf = await fetchBytes(this.files["octree.bin"], node.offset, n * (3 * w + 4));
    const pos = w === 2 ? new Uint16Array(buf, 0, 3 * n) : new Uint32Array(buf, 0, 3 * n);
    const rgb = new Uint8Array(buf, 3 * w * n, 3 * n), intensity = new Uint8Array(buf, 3 * w * n + 3 * n, n);
    const xyz = new Float32Array(3 * n), colour = new Uint8Array(3 * n);
    const step = this.sideM / 2 ** node.level, q = this.q;
    const zLo = (this.meta.bounds_q.min[2] - this.meta.origin_q[2]) * q, zSpan = Math.max(1, (this.meta.bounds_q.max[2] - this.meta.bounds_q.min[2]) * q);
    for (let i = 0; i < n; i++) {
      for (let a = 0; a < 3; a++) xyz[3 * i + a] = node.xyz[a] * step + pos[3 * i + a] * q;
      if (this.meta.rgb) {
        colour[3 * i] = rgb[3 * i]; colour[3 * i + 1] = rgb[3 * i + 1]; colour[3 * i + 2] = rgb[3 * i + 2];
      } else { // no camera colour: hue by height, brightness by intensity
        const h = Math.max(0, Math.min(1, (xyz[3 * i + 2] - zLo) / zSpan)), v = 0.45 + 0.55 * intensity[i] / 255;
        colour[3 * i] = v * (80 + 175 * h); colour[3 * i + 1] = v * (200 - 80 * h); colour[3 * i + 2] = v * (255 - 200 * h);
      }
    }
    const geometry = new THREE.BufferGeometry();
    geometry.setAttribute("position", new THREE.BufferAttribute(xyz, 3));
    geometry.setAttribute("color", new THREE.BufferAttribute(colour, 3, true));
    geometry.boundingBox = node.box.clone();
    geometry.boundingSphere = node.box.getBoundingSphere(new THREE.Sphere());
    return new THREE.Points(geometry, material);
  }
}

const material = new THREE.PointsMaterial({ size: 2, sizeAttenuation: false, vertexColors: true });
let layer, renderer, scene, camera, controls, scheduled = false, inFlight = 0;

// Nodes to draw: from the root, the nodes with the largest projected point spacing first,
// children only while a node's spacing covers more than MIN_PX pixels, within the budget.
function choose() {
  const frustum = new THREE.Frustum().setFromProjectionMatrix(
    new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse));
  const pxPerRad = renderer.domElement.height / (2 * Math.tan(THREE.MathUtils.degToRad(camera.fov) / 2));
  const spacing = (node) => {
    const d = Math.max(1e-3, node.box.distanceToPoint(camera.position));
    return (layer.meta.spacing_m / 2 ** node.level) / d * pxPerRad;
  };
  const chosen = [], queue = [[Infinity, layer.root]];
  let points = 0;
  while (queue.length) {
    queue.sort((a, b) => a[0] - b[0]);
    const [px, node] = queue.pop();
    if (!frustum.intersectsBox(node.box)) continue;
    if (node.pointer) { loadPage(node); continue; }
    if (points + node.count > BUDGET) continue;
    points += node.count;
    chosen.push(node);
    if (px > MIN_PX || node.level === 0) for (const c of node.children) queue.push([spacing(c), c]);
  }
  return chosen;
}

function loadPage(node) {
  if (node.loading) return;
  node.loading = true;
  const [offset, size] = node.pointer;
  layer.loadPage(offset, size).then(() => { node.loading = false; schedule(); }).catch(fail);
}

function update() {
  scheduled = false;
  controls.update();
  const chosen = choose(), tick = performance.now();
  let drawn = 0, shown = 0;
  for (const node of chosen) {
    node.used = tick;
    if (node.object) { drawn += node.count; shown++; } else if (node.count && !node.loading && inFlight < MAX_LOADS) {
      node.loading = true;
      inFlight++;
      layer.loadNode(node).then(obj => { node.object = obj; scene.add(obj); obj.visible = false; })
        .catch(fail).finally(() => { node.loading = false; inFlight--; schedule(); });
    }
  }
  const visible = new Set(chosen);
  let loaded = 0;
  for (const node of layer.nodes.values()) {
    if (!node.object) continue;
    node.object.visible = visible.has(node);
    loaded += node.count;
  }
  evict(loaded);
  renderer.render(scene, camera);
  Object.assign(state, { points: drawn, nodes: shown, loadedNodes: scene.children.length, idle: inFlight === 0 });
  const level1 = layer.root.children.filter(c => chosen.includes(c));
  if (state.firstViewMs === null && layer.root.object && level1.every(c => c.object || !c.count)) {
    state.firstViewMs = performance.now() - t0;
    state.firstViewBytes = state.bytes;
    state.ready = true;
  }
  document.getElementById("map-status").textContent =
    `${drawn.toLocaleString()} of ${layer.meta.points.toLocaleString()} points (budget ${BUDGET.toLocaleString()})`;
}

function evict(loaded) { // keep at most twice the budget in memory, least recently drawn out first
  if (loaded <= 2 * BUDGET) return;
  const idle = [...layer.nodes.values()].filter(n => n.object && !n.object.visible).sort((a, b) => a.used - b.used);
  for (const node of idle) {
    if (loaded <= 2 * BUDGET) break;
    scene.remove(node.object);
    node.object.geometry.dispose();
    node.object = null;
    loaded -= node.count;
  }
}

function schedule() {
  if (!scheduled) { scheduled = true; requestAnimationFrame(update); }
}

function view(top) {
  const m = layer.meta, q = m.quantum_m;
  const lo = m.bounds_q.min.map((v, a) => (v - m.origin_q[a]) * q), hi = m.bounds_q.max.map((v, a) => (v - m.origin_q[a]) * q);
  const centre = new THREE.Vector3((lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2);
  const size = Math.max(hi[0] - lo[0], hi[1] - lo[1], 10);
  controls.target.copy(centre);
  camera.position.copy(centre).add(top ? new THREE.Vector3(0, -1e-3 * size, 1.1 * size)
                                       : new THREE.Vector3(-0.5 * size, -0.6 * size, 0.5 * size));
  camera.near = size / 1e4; camera.far = size * 20;
  camera.updateProjectionMatrix();
  schedule();
}

async function main() {
  const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const res = await fetch(`/v1/scenes/${encodeURIComponent(id)}/map`,
                          { headers: { Authorization: "Bearer " + sessionStorage.getItem("fathom-token") } });
  if (!res.ok) throw new Error(`map: HTTP ${res.status}`);
  const info = await res.json();
  const name = ["lidar", "sonar"].find(n => n in info.layers);
  state.available = name !== undefined;
  if (!state.available) { document.getElementById("map-panel").hidden = true; state.ready = true; return; }
  document.getElementById("map-title").textContent = `map (${name}, moving objects: ${info.moving || "kept"})`;
  layer = new Layer(info.layers[name]);
  const canvas = document.getElementById("map3d");
  renderer = new THREE.WebGLRenderer({ canvas, antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(canvas.clientWidth || canvas.width, canvas.clientHeight || canvas.height, false);
  scene = new THREE.Scene();
  scene.background = new THREE.Color(0x000000);
  camera = new THREE.PerspectiveCamera(60, canvas.width / canvas.height, 0.1, 1e5);
  camera.up.set(0, 0, 1); // z up (ENU)
  controls = new THREE.OrbitControls(camera, canvas);
  controls.screenSpacePanning = true;
  controls.addEventListener("change", schedule);
  document.getElementById("map-top").addEventListener("click", () => view(true));
  document.getElementById("map-reset").addEventListener("click", () => view(false));
  await layer.loadPage(layer.meta.hierarchy.root_offset, layer.meta.hierarchy.root_bytes);
  view(false);
}

main().catch(fail);
