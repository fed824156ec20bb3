// Fathom viewer, segmentation tools for the bird's-eye view (used by viewer.js):
// - colour by class: each drawn point takes its class colour from the frame's effective labels
//   (GET .../segmentation/frames/{i}?lod=L: one class id per point of the level drawn, in the
//   order of points?lod=L); class 0 keeps the height colouring;
// - try a prism: polygon vertices clicked on the view (ego x, y; a double-click or "close" ends
//   it) and a z range (ego, metres). The server selects the points (POST
//   .../segmentation/frames/{i}/select: the engine's select_prism; nothing is written); they are
//   highlighted and counted. "apply as class" writes exactly those rows (an "indices" edit, the
//   annotator role; a viewer token gets the server's 403 shown here).

const SELECTED = [255, 255, 255]; // highlight of the selected points (the height colours never reach it)
const POLYGON_COLOUR = "#7cfc00";
const CLOSE_PX = 3; // a click this near the last vertex adds none (the second click of a double-click)

export class Segmentation {
  // ctx: { api(path, kind, init), $(id), bev: { toPx(x, y), toEgo(u, v) }, redraw(), report }
  constructor(ctx) {
    this.ctx = ctx;
    this.classes = [];      // the scene's class list: {id, name, color: [r, g, b]}
    this.byClass = false;   // colour by class
    this.frame = null;      // the frame drawn: {index, lod, n}
    this.labels = null;     // Uint16Array (n): class of each drawn point, while colouring by class
    this.vertices = [];     // the prism's polygon, ego [x, y] metres
    this.drawing = false;   // clicks add vertices
    this.selection = null;  // the server's answer for the closed polygon on this frame
    this.colours = null;    // Uint8ClampedArray (4 n): colour per drawn point, alpha 0: the default colour
    this.wire();
  }

  base() {
    return `/v1/scenes/${encodeURIComponent(this.ctx.scene().id)}/segmentation`;
  }

  message(text, isError) {
    const s = this.ctx.$("seg-status");
    s.textContent = text;
    s.className = isError ? "error" : "";
    this.ctx.report.segMessage = text;
  }

  wire() {
    const $ = this.ctx.$, canvas = $("bev");
    const run = f => () => f().catch(e => this.message(String(e.message || e), true));
    $("seg-colour").addEventListener("change", run(async () => {
      this.byClass = $("seg-colour").checked;
      await this.loadLabels();
      this.update();
    }));
    $("prism-draw").addEventListener("click", () => {
      this.vertices = []; this.selection = null; this.drawing = true;
      this.message("click the polygon's vertices; double-click or 'close' ends it");
      this.update();
    });
    $("prism-close").addEventListener("click", run(() => this.close()));
    $("prism-clear").addEventListener("click", () => {
      this.vertices = []; this.selection = null; this.drawing = false;
      this.message("");
      this.update();
    });
    for (const id of ["prism-zmin", "prism-zmax"]) {
      $(id).addEventListener("change", run(() => this.select()));
    }
    $("prism-apply").addEventListener("click", run(() => this.apply()));
    canvas.addEventListener("click", e => this.click(canvas, e));
    canvas.addEventListener("dblclick", run(() => this.close()));
  }

  async loadClasses() {
    const info = await this.ctx.api(this.base(), "json");
    this.classes = info.classes;
    const select = this.ctx.$("apply-class");
    select.innerHTML = "";
    for (const c of this.classes) {
      const o = document.createElement("option");
      o.value = c.id; o.textContent = `${c.id} ${c.name}`;
      select.appendChild(o);
    }
    this.ctx.report.classes = this.classes.length;
  }

  // The frame now drawn (n points of level lod): its labels and the prism's selection on it.
  async show(index, lod, n) {
    this.frame = { index, lod, n };
    await Promise.all([this.loadLabels(), this.vertices.length >= 3 && !this.drawing ? this.select() : null]);
    this.recolour();
  }

  async loadLabels() {
    this.labels = null;
    if (!this.byClass || !this.frame) return;
    if (!this.classes.length) await this.loadClasses();
    const { index, lod, n } = this.frame;
    const buf = await this.ctx.api(`${this.base()}/frames/${index}?lod=${lod}`, "bin");
    if (buf.byteLength !== 6 * n) throw new Error(`frame ${index}: labels for ${buf.byteLength / 6} points, ${n} drawn`);
    this.labels = new Uint16Array(buf, 0, n);
  }

  click(canvas, e) {
    if (!this.drawing) return;
    const u = e.offsetX * canvas.width / canvas.clientWidth, v = e.offsetY * canvas.height / canvas.clientHeight;
    const last = this.vertices[this.vertices.length - 1];
    if (last) {
      const [lu, lv] = this.ctx.bev.toPx(last[0], last[1]);
      if (Math.hypot(u - lu, v - lv) < CLOSE_PX) return;
    }
    this.vertices.push(this.ctx.bev.toEgo(u, v));
    this.update();
  }

  async close() {
    if (!this.drawing) return;
    if (this.vertices.length < 3) { this.message("a prism needs at least 3 vertices", true); return; }
    this.drawing = false;
    await this.select();
    this.update();
  }

  zRange() {
    // an empty box is NaN, sent as null: the server's 422 names the field
    return [this.ctx.$("prism-zmin").valueAsNumber, this.ctx.$("prism-zmax").valueAsNumber];
  }

  // Ask the server which points of the frame the closed polygon and z range select.
  async select() {
    if (this.drawing || this.vertices.length < 3 || !this.frame) return;
    const [zMin, zMax] = this.zRange();
    const prism = { kind: "prism", polygon: this.vertices, z_min: zMin, z_max: zMax };
    const { index, lod } = this.frame;
    this.selection = null;
    const out = await this.ctx.api(`${this.base()}/frames/${index}/select`, "json", {
      method: "POST", json: { selection: prism, frame: "ego", lod } });
    this.selection = out;
    this.ctx.report.prism = { polygon: this.vertices, z_min: zMin, z_max: zMax, frame: index, lod };
    this.ctx.report.selected = out.count;
    this.message(`prism: ${out.count} of ${out.points} points selected (${out.lod_indices.length} drawn)`);
    this.update();
  }

  async apply() {
    if (!this.selection) { this.message("draw and close a prism first", true); return; }
    const classId = Number(this.ctx.$("apply-class").value);
    const name = this.classes.find(c => c.id === classId)?.name ?? classId;
    const edit = { frame: this.selection.frame_index, class_id: classId,
                   selection: { kind: "indices", indices: this.selection.indices } };
    // "*": the rows were chosen by geometry alone, so the edit holds whatever else changed meanwhile
    const out = await this.ctx.api(`${this.base()}/edits`, "json", {
      method: "POST", json: { edits: [edit] }, headers: { "If-Match": "*" } });
    this.ctx.report.applied = out.written[0].points;
    this.message(`wrote ${out.written[0].points} points as ${name} (revision ${out.revision})`);
    await this.loadLabels();
    this.update();
  }

  // Per drawn point: selected → highlight, else its class colour (class colouring, class ≠ 0).
  recolour() {
    const n = this.frame ? this.frame.n : 0;
    let labelled = 0;
    this.colours = null;
    if (this.labels || this.selection) {
      const out = this.colours = new Uint8ClampedArray(4 * n);
      if (this.labels) {
        const colour = new Map(this.classes.map(c => [c.id, c.color]));
        for (let j = 0; j < n; j++) {
          const c = this.labels[j] && colour.get(this.labels[j]);
          if (!c) continue;
          out[4 * j] = c[0]; out[4 * j + 1] = c[1]; out[4 * j + 2] = c[2]; out[4 * j + 3] = 255;
          labelled++;
        }
      }
      if (this.selection) {
        for (const j of this.selection.lod_indices) {
          out[4 * j] = SELECTED[0]; out[4 * j + 1] = SELECTED[1]; out[4 * j + 2] = SELECTED[2]; out[4 * j + 3] = 255;
        }
      }
    }
    this.ctx.report.labelled = labelled;
  }

  update() {
    this.recolour();
    this.ctx.$("prism-apply").disabled = !this.selection;
    this.ctx.redraw();
  }

  // The polygon (open while drawing) over the bird's-eye view.
  drawOverlay(ctx2d) {
    if (!this.vertices.length) return;
    const pts = this.vertices.map(([x, y]) => this.ctx.bev.toPx(x, y));
    ctx2d.strokeStyle = ctx2d.fillStyle = POLYGON_COLOUR;
    ctx2d.lineWidth = 1;
    ctx2d.beginPath();
    ctx2d.moveTo(pts[0][0], pts[0][1]);
    for (const p of pts.slice(1)) ctx2d.lineTo(p[0], p[1]);
    if (!this.drawing) ctx2d.closePath();
    ctx2d.stroke();
    for (const [u, v] of pts) ctx2d.fillRect(u - 2, v - 2, 4, 4);
  }
}
