// pixelwise annotate: a label-map editor in the browser.
//
// The mask is one Uint8Array with the class of every pixel (255 = ignore). Tools change it and repaint
// only the rectangle they touched, into 512x512 tile canvases: the browser then re-uploads only the
// touched tiles, where one 12-megapixel canvas costs it tens of milliseconds a frame for any change.
// Zoom and pan move the stacked layers with a CSS transform: nothing is redrawn.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get('token') || '';
const IGNORE = 255;

const app = {
  dataset: null, classes: [], palette: [], items: [], order: [], orderVersion: -1, model: null,
  lut: new Uint32Array(256),  // label -> RGBA pixel of the mask canvas (little-endian: 0xAABBGGRR)
  item: null, W: 0, H: 0,
  labels: null,       // Uint8Array W*H: the label map being edited
  opened: null,       // the labels as the image was opened: what the eraser paints back
  snapshot: null,     // the labels when the current operation began, for its undo entry
  tiles: [],          // the mask's tile canvases: {x, y, w, h, ctx, data, px (Uint32 view of data)}
  rgb: null,          // the image's RGBA bytes, read back once, on the first flood fill
  superpixels: null,  // Uint16Array W*H of SLIC segment ids from the server, loaded when first needed
  unsure: null, regions: [], regionIndex: -1,
  version: 'absent', conflictVersion: null,
  undo: [], redo: [], edits: 0, savedEdits: 0,
  tool: 'brush', cls: 0, size: 15, square: false,
  view: { z: 1, x: 0, y: 0 },
  op: null, pending: null, drawing: false, last: null, pan: null, spaceDown: false, polygon: [],
  loadTicket: 0, draftTimer: 0,
};

const ctx = {};  // 2D contexts of the image and hint canvases, set in init()
const TILE = 512;

// ------------------------------------------------------------------------------------------------ server

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (TOKEN) headers['X-Pixelwise-Token'] = TOKEN;  // the cookie also carries it; the header needs no cookie
  return fetch(path, { ...options, headers, credentials: 'same-origin' });
}

async function getJSON(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function getBytes(path) {
  const response = await api(path);
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText);
  return response;
}

// ------------------------------------------------------------------------------------------------ painting

function buildLut() {
  for (let v = 0; v < 256; v++) {
    const [r, g, b] = app.palette.slice(3 * v, 3 * v + 3);
    const alpha = v === IGNORE ? 0 : 255;  // ignore shows the bare image: nothing is claimed there
    app.lut[v] = ((alpha << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }
}

function buildTiles() {
  const layer = $('mask');
  layer.style.width = `${app.W}px`;
  layer.style.height = `${app.H}px`;
  app.tiles = [];
  for (let y = 0; y < app.H; y += TILE) {
    for (let x = 0; x < app.W; x += TILE) {
      const canvas = document.createElement('canvas'), w = Math.min(TILE, app.W - x), h = Math.min(TILE, app.H - y);
      Object.assign(canvas, { width: w, height: h });
      canvas.style.left = `${x}px`;
      canvas.style.top = `${y}px`;
      const c = canvas.getContext('2d'), data = c.createImageData(w, h);
      app.tiles.push({ x, y, w, h, ctx: c, data, px: new Uint32Array(data.data.buffer), canvas });
    }
  }
  layer.replaceChildren(...app.tiles.map((t) => t.canvas));
}

// Repaint the label colours of [x0, x1) x [y0, y1) into the tiles it overlaps, and only that rectangle.
function paintRect(x0, y0, x1, y1) {
  x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(app.W, x1); y1 = Math.min(app.H, y1);
  if (x1 <= x0 || y1 <= y0) return;
  const { W, labels, lut } = app;
  for (const t of app.tiles) {
    const ax = Math.max(x0, t.x), ay = Math.max(y0, t.y), bx = Math.min(x1, t.x + t.w), by = Math.min(y1, t.y + t.h);
    if (bx <= ax || by <= ay) continue;
    for (let y = ay; y < by; y++) {
      for (let i = y * W + ax, j = (y - t.y) * t.w + (ax - t.x), end = y * W + bx; i < end; i++, j++) {
        t.px[j] = lut[labels[i]];
      }
    }
    t.ctx.putImageData(t.data, 0, 0, ax - t.x, ay - t.y, bx - ax, by - ay);
  }
}

// Operations (a stroke, a fill) record the box they touched; the pixels it held before come from the
// snapshot taken when the operation began, so an undo entry stores only that box.
function beginOp() {
  app.snapshot.set(app.labels);
  app.op = { x0: app.W, y0: app.H, x1: 0, y1: 0 };
  app.pending = null;
}

function touched(x0, y0, x1, y1) {
  x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(app.W, x1); y1 = Math.min(app.H, y1);
  if (x1 <= x0 || y1 <= y0) return;
  const op = app.op;
  op.x0 = Math.min(op.x0, x0); op.y0 = Math.min(op.y0, y0); op.x1 = Math.max(op.x1, x1); op.y1 = Math.max(op.y1, y1);
  const p = app.pending;
  app.pending = p ? { x0: Math.min(p.x0, x0), y0: Math.min(p.y0, y0), x1: Math.max(p.x1, x1), y1: Math.max(p.y1, y1) }
                  : { x0, y0, x1, y1 };
}

function flush() {
  const p = app.pending;
  if (p) paintRect(p.x0, p.y0, p.x1, p.y1);
  app.pending = null;
}

function endOp() {
  flush();
  const op = app.op;
  app.op = null;
  if (!op || op.x1 <= op.x0) return;
  const before = crop(app.snapshot, op);
  if (sameBytes(before, crop(app.labels, op))) return;  // a click that changed nothing is no undo step
  app.undo.push({ ...op, before });
  app.redo = [];
  edited();
}

function crop(src, r) {
  const w = r.x1 - r.x0, out = new Uint8Array(w * (r.y1 - r.y0));
  for (let y = r.y0; y < r.y1; y++) out.set(src.subarray(y * app.W + r.x0, y * app.W + r.x1), (y - r.y0) * w);
  return out;
}

function paste(dst, r, data) {
  const w = r.x1 - r.x0;
  for (let y = r.y0; y < r.y1; y++) dst.set(data.subarray((y - r.y0) * w, (y - r.y0 + 1) * w), y * app.W + r.x0);
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// Undo and redo swap a box's pixels with the stored ones; the swapped-out pixels become the opposite entry.
function step(from, to) {
  if (app.drawing) return;  // mid-stroke the snapshot belongs to the stroke
  const entry = from.pop();
  if (!entry || !app.labels) return;
  const now = crop(app.labels, entry);
  paste(app.labels, entry, entry.before);
  to.push({ ...entry, before: now });
  paintRect(entry.x0, entry.y0, entry.x1, entry.y1);
  edited();
}

function edited() {
  app.edits++;
  scheduleDraft();
}

const isDirty = () => app.edits !== app.savedEdits;

// ------------------------------------------------------------------------------------------------ tools

// One brush footprint: a size x size square (or the disc inside it) whose corner is size/2 left of and
// above the pixel under the cursor, so an odd size centres on that pixel.
function stamp(cx, cy) {
  const s = app.size, h = Math.floor(s / 2), x0 = cx - h, y0 = cy - h, r2 = (s / 2) ** 2;
  const mx = x0 + s / 2, my = y0 + s / 2;
  const xa = Math.max(0, x0), ya = Math.max(0, y0), xb = Math.min(app.W, x0 + s), yb = Math.min(app.H, y0 + s);
  const { W, labels, opened } = app;
  const eraser = app.tool === 'eraser', value = app.tool === 'ignore' ? IGNORE : app.cls;
  for (let y = ya; y < yb; y++) {
    for (let x = xa; x < xb; x++) {
      if (!app.square && (x + 0.5 - mx) ** 2 + (y + 0.5 - my) ** 2 > r2) continue;
      const i = y * W + x;
      labels[i] = eraser ? opened[i] : value;
    }
  }
  touched(xa, ya, xb, yb);
}

// A stroke segment: a stamp on every pixel step from a to b, so fast strokes leave no gaps.
function line(ax, ay, bx, by) {
  const n = Math.max(Math.abs(bx - ax), Math.abs(by - ay));
  for (let k = 0; k <= n; k++) {
    stamp(Math.round(ax + ((bx - ax) * k) / (n || 1)), Math.round(ay + ((by - ay) * k) / (n || 1)));
  }
}

// Even-odd scanline fill of a polygon whose corners are pixel centres: a pixel is in if its centre is.
function fillPolygon(points, value) {
  const ys = points.map((p) => p[1]);
  const top = Math.max(0, Math.floor(Math.min(...ys))), bottom = Math.min(app.H - 1, Math.ceil(Math.max(...ys)));
  for (let y = top; y <= bottom; y++) {
    const yc = y + 0.5, xs = [];
    for (let k = 0; k < points.length; k++) {
      const [ax, ay] = points[k], [bx, by] = points[(k + 1) % points.length];
      if ((ay <= yc) !== (by <= yc)) xs.push(ax + ((yc - ay) * (bx - ax)) / (by - ay));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      const xa = Math.max(0, Math.ceil(xs[k] - 0.5)), xb = Math.min(app.W, Math.ceil(xs[k + 1] - 0.5));
      if (xb > xa) {
        app.labels.fill(value, y * app.W + xa, y * app.W + xb);
        touched(xa, y, xb, y + 1);
      }
    }
  }
}

function imageRGB() {
  if (!app.rgb) app.rgb = ctx.image.getImageData(0, 0, app.W, app.H).data;  // one read-back per image
  return app.rgb;
}

// The 4-connected area around (sx, sy) whose image colour differs from the clicked pixel's by at most
// `tolerance` in every channel: the colours decide, not the labels already there.
function floodFill(sx, sy, value, tolerance) {
  const { W, H, labels } = app, rgb = imageRGB();
  const s = 4 * (sy * W + sx), r = rgb[s], g = rgb[s + 1], b = rgb[s + 2];
  const similar = (i) => Math.abs(rgb[4 * i] - r) <= tolerance && Math.abs(rgb[4 * i + 1] - g) <= tolerance
    && Math.abs(rgb[4 * i + 2] - b) <= tolerance;
  const seen = new Uint8Array(W * H), stack = [sy * W + sx];
  seen[sy * W + sx] = 1;
  let x0 = sx, x1 = sx, y0 = sy, y1 = sy;
  const visit = (j) => { if (!seen[j] && similar(j)) { seen[j] = 1; stack.push(j); } };
  while (stack.length) {
    const i = stack.pop(), x = i % W, y = (i - x) / W;
    labels[i] = value;
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    if (x > 0) visit(i - 1);
    if (x < W - 1) visit(i + 1);
    if (y > 0) visit(i - W);
    if (y < H - 1) visit(i + W);
  }
  touched(x0, y0, x1 + 1, y1 + 1);
}

function superpixelFill(sx, sy, value) {
  const { W, labels, superpixels } = app, id = superpixels[sy * W + sx];
  let x0 = app.W, y0 = app.H, x1 = 0, y1 = 0;
  for (let i = 0; i < superpixels.length; i++) {
    if (superpixels[i] !== id) continue;
    labels[i] = value;
    const x = i % W, y = (i - x) / W;
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
  touched(x0, y0, x1 + 1, y1 + 1);
}

async function loadSuperpixels() {
  if (app.superpixels) return app.superpixels;
  const item = app.item;
  say('computing superpixels…');
  const buffer = await (await getBytes(`/api/items/${item.id}/superpixels`)).arrayBuffer();
  if (item !== app.item) return null;
  app.superpixels = new Uint16Array(buffer);
  document.body.dataset.superpixels = '1';
  say('superpixels ready');
  drawHints();
  return app.superpixels;
}

// ------------------------------------------------------------------------------------------------ hints

// Outlines where the model is unsure (yellow) and, with the superpixel tool, superpixel borders (cyan).
function drawHints() {
  const { W, H, unsure } = app;
  const sp = app.tool === 'superpixel' ? app.superpixels : null;
  ctx.hints.clearRect(0, 0, W, H);
  $('hints').classList.toggle('empty', !unsure && !sp);
  if (!unsure && !sp) return;
  const data = ctx.hints.createImageData(W, H), px = new Uint32Array(data.data.buffer);
  for (let y = 0; y < H; y++) {
    for (let x = 0, i = y * W; x < W; x++, i++) {
      if (unsure && unsure[i] && (x === 0 || y === 0 || x === W - 1 || y === H - 1
          || !unsure[i - 1] || !unsure[i + 1] || !unsure[i - W] || !unsure[i + W])) px[i] = 0xff00e5ff;
      else if (sp && ((x < W - 1 && sp[i] !== sp[i + 1]) || (y < H - 1 && sp[i] !== sp[i + W]))) px[i] = 0x99ffdd00;
    }
  }
  ctx.hints.putImageData(data, 0, 0);
}

function nextUnsure() {
  if (!app.regions.length) {
    say(app.model ? 'no unsure region in this image' : 'no model loaded: start with --checkpoint');
    return;
  }
  app.regionIndex = (app.regionIndex + 1) % app.regions.length;
  const [x0, y0, x1, y1, pixels] = app.regions[app.regionIndex];
  const vp = $('viewport').getBoundingClientRect(), pad = 3;
  const z = Math.min(16, vp.width / ((x1 - x0) * pad), vp.height / ((y1 - y0) * pad));
  setView(z, vp.width / 2 - ((x0 + x1) / 2) * z, vp.height / 2 - ((y0 + y1) / 2) * z);
  say(`unsure region ${app.regionIndex + 1} of ${app.regions.length} (${pixels} pixels)`);
}

// ------------------------------------------------------------------------------------------------ view

function setView(z, x, y) {
  app.view = { z, x, y };
  const stage = $('stage');
  stage.style.transform = `translate(${x}px, ${y}px) scale(${z})`;
  stage.classList.toggle('pixelated', z >= 1);  // see label edges sharp when zoomed in
  // The outlines live in image space under the CSS zoom: keep them 1.5 screen pixels wide.
  $('overlay').style.setProperty('--line', `${1.5 / z}px`);
  updateCursor();
}

function fit() {
  const vp = $('viewport').getBoundingClientRect();
  const z = Math.min(vp.width / app.W, vp.height / app.H) * 0.98;
  setView(z, (vp.width - app.W * z) / 2, (vp.height - app.H * z) / 2);
}

function actualSize() {
  const vp = $('viewport').getBoundingClientRect();
  setView(1, Math.round((vp.width - app.W) / 2), Math.round((vp.height - app.H) / 2));
}

function zoomAt(px, py, factor) {
  const { z, x, y } = app.view, nz = Math.min(64, Math.max(0.02, z * factor));
  setView(nz, px - ((px - x) * nz) / z, py - ((py - y) * nz) / z);
}

// Viewport position (CSS pixels) -> image pixel under it.
function imagePoint(ev) {
  const vp = $('viewport').getBoundingClientRect(), { z, x, y } = app.view;
  return [Math.floor((ev.clientX - vp.left - x) / z), Math.floor((ev.clientY - vp.top - y) / z)];
}

function updateCursor(point) {
  if (point) app.cursor = point;
  const brush = ['brush', 'eraser', 'ignore'].includes(app.tool) && app.cursor && !app.pan;
  const sq = $('cursor-square'), rd = $('cursor-round');
  sq.style.visibility = brush && app.square ? 'visible' : 'hidden';
  rd.style.visibility = brush && !app.square ? 'visible' : 'hidden';
  if (!brush) return;
  const s = app.size, x0 = app.cursor[0] - Math.floor(s / 2), y0 = app.cursor[1] - Math.floor(s / 2);
  sq.setAttribute('x', x0); sq.setAttribute('y', y0); sq.setAttribute('width', s); sq.setAttribute('height', s);
  rd.setAttribute('cx', x0 + s / 2); rd.setAttribute('cy', y0 + s / 2); rd.setAttribute('r', s / 2);
}

// ------------------------------------------------------------------------------------------------ PNG

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length), view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let k = 0; k < 4; k++) out[4 + k] = type.charCodeAt(k);
  out.set(data, 8);
  let c = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) c = CRC_TABLE[(c ^ out[i]) & 0xff] ^ (c >>> 8);
  view.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
  return out;
}

// Labels -> 8-bit greyscale PNG. The browser's own zlib (CompressionStream) does the deflating, so a
// 12 MP mask encodes in tens of milliseconds; canvas.toBlob would round-trip through RGBA and colour.
async function encodePNG(labels, W, H) {
  const raw = new Uint8Array((W + 1) * H);  // each row: filter byte 0 (none), then the row's labels
  for (let y = 0; y < H; y++) raw.set(labels.subarray(y * W, (y + 1) * W), y * (W + 1) + 1);
  const zlib = new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'));
  const idat = new Uint8Array(await new Response(zlib).arrayBuffer());
  const header = new Uint8Array(13), view = new DataView(header.buffer);
  view.setUint32(0, W); view.setUint32(4, H); header[8] = 8; header[9] = 0;  // 8 bits, greyscale
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([signature, pngChunk('IHDR', header), pngChunk('IDAT', idat), pngChunk('IEND', new Uint8Array(0))],
    { type: 'image/png' });
}

// ------------------------------------------------------------------------------------------------ drafts

// Unsaved strokes live in IndexedDB (a 12 MP label map is far over localStorage's quota), keyed by dataset
// and image name, and go when the mask is saved.
let draftDB = null;
function drafts() {
  draftDB = draftDB || new Promise((resolve, reject) => {
    const request = indexedDB.open('pixelwise-annotate', 1);
    request.onupgradeneeded = () => request.result.createObjectStore('drafts');
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  return draftDB;
}

async function draftDo(mode, fn) {
  const db = await drafts();
  return new Promise((resolve, reject) => {
    const tx = db.transaction('drafts', mode), request = fn(tx.objectStore('drafts'));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
  });
}

const draftKey = (item) => `${app.dataset.key}:${item.name}`;

function scheduleDraft() {
  clearTimeout(app.draftTimer);
  document.body.dataset.draft = 'pending';
  app.draftTimer = setTimeout(writeDraft, 250);
}

async function writeDraft() {
  clearTimeout(app.draftTimer);
  if (app.drawing) { scheduleDraft(); return; }  // copying 12 MB mid-stroke would stall it
  if (!app.item || !isDirty()) return;
  const record = { labels: app.labels.slice(), version: app.version, width: app.W, height: app.H, time: Date.now() };
  await draftDo('readwrite', (store) => store.put(record, draftKey(app.item)));
  document.body.dataset.draft = 'saved';
}

// ------------------------------------------------------------------------------------------------ images

async function openItem(id) {
  const ticket = ++app.loadTicket;  // a later open wins over one still loading
  document.body.dataset.ready = '0';
  try {
    const meta = await getJSON(`/api/items/${id}`);
    const [bitmap, labelsResponse, unsure] = await Promise.all([
      getBytes(`/api/items/${id}/image`).then((r) => r.blob()).then((b) => createImageBitmap(b)),
      getBytes(`/api/items/${id}/labels`),
      meta.regions ? getBytes(`/api/items/${id}/unsure`).then((r) => r.arrayBuffer()) : null,
    ]);
    const labels = new Uint8Array(await labelsResponse.arrayBuffer());
    if (ticket !== app.loadTicket) return;
    const { width: W, height: H } = meta;
    if (bitmap.width !== W || bitmap.height !== H || labels.length !== W * H) {
      throw new Error(`image ${meta.name} decodes to ${bitmap.width}x${bitmap.height}, expected ${W}x${H}`);
    }
    Object.assign(app, {
      item: app.items[id], W, H, labels, opened: labels.slice(), snapshot: new Uint8Array(W * H),
      version: labelsResponse.headers.get('X-Mask-Version'), rgb: null, superpixels: null,
      unsure: unsure && new Uint8Array(unsure), regions: meta.regions || [], regionIndex: -1,
      undo: [], redo: [], edits: 0, savedEdits: 0, polygon: [],
    });
    for (const name of ['image', 'hints']) Object.assign($(name), { width: W, height: H });
    const overlay = $('overlay');
    overlay.setAttribute('width', W); overlay.setAttribute('height', H);
    overlay.setAttribute('viewBox', `0 0 ${W} ${H}`);
    ctx.image.drawImage(bitmap, 0, 0);
    buildTiles();
    paintRect(0, 0, W, H);
    drawPolygon();
    document.body.dataset.superpixels = '0';
    $('banner').hidden = true;
    fit();
    const source = labelsResponse.headers.get('X-Source');
    say({ saved: 'saved mask', model: 'pre-filled by the model', empty: 'new mask' }[source]);
    await restoreDraft();
    drawHints();
    if (app.tool === 'superpixel') loadSuperpixels().catch(fail);
    history.replaceState(null, '', `${location.pathname}${location.search}#item=${id}`);
    showStatus();
    document.body.dataset.ready = '1';
  } catch (err) {
    if (ticket === app.loadTicket) fail(err);
  }
}

// Unsaved strokes from an earlier visit come back as one undoable step, still tied to the mask version
// they were drawn on: if that mask has changed since, saving them is a conflict like any stale tab's.
async function restoreDraft() {
  const draft = await draftDo('readonly', (store) => store.get(draftKey(app.item))).catch(() => null);
  if (!draft || draft.width !== app.W || draft.height !== app.H) return;
  const steps = app.undo.length;
  beginOp();
  app.labels.set(draft.labels);
  touched(0, 0, app.W, app.H);
  endOp();
  if (app.undo.length === steps) return;  // the draft holds nothing the mask does not
  app.version = draft.version;
  say(`restored unsaved strokes from ${new Date(draft.time).toLocaleString()}`);
}

async function save() {
  if (!app.item || !app.labels) return false;
  const { item, W, H } = app, edits = app.edits, t0 = performance.now();
  document.body.dataset.save = 'saving';
  say('saving…');
  try {
    const png = await encodePNG(app.labels, W, H);
    const response = await api(`/api/items/${item.id}/labels`, {
      method: 'PUT', body: png, headers: { 'If-Match': app.version, 'Content-Type': 'image/png' } });
    const body = await response.json().catch(() => ({}));
    if (item !== app.item) return response.ok;
    if (response.status === 409) {
      app.conflictVersion = body.version;
      $('banner-text').textContent = `Not saved: ${body.error}.`;
      $('banner').hidden = false;
      document.body.dataset.save = 'conflict';
      say('not saved: the mask changed elsewhere', true);
      return false;
    }
    if (!response.ok) throw new Error(body.error || response.statusText);
    const ms = Math.round(performance.now() - t0);
    app.version = body.version;
    app.savedEdits = edits;  // strokes made while saving stay unsaved
    item.labelled = true;
    if (!isDirty()) {
      clearTimeout(app.draftTimer);
      await draftDo('readwrite', (store) => store.delete(draftKey(item))).catch(() => {});
    }
    $('banner').hidden = true;
    showStatus(body);
    document.body.dataset.saveMs = ms;
    document.body.dataset.saves = Number(document.body.dataset.saves) + 1;
    document.body.dataset.save = 'ok';
    say(`saved in ${ms} ms`);
    return true;
  } catch (err) {
    document.body.dataset.save = 'error';
    fail(err);
    return false;
  }
}

async function go(delta) {
  if (!app.item) return;
  const next = app.order[app.order.indexOf(app.item.id) + delta];
  if (next === undefined) { say(delta > 0 ? 'this is the last image' : 'this is the first image'); return; }
  document.body.dataset.ready = '0';
  if (isDirty() && !(await save())) { document.body.dataset.ready = '1'; return; }
  openItem(next);
}

// ------------------------------------------------------------------------------------------------ status

function say(text, error = false) {
  const message = $('message');
  message.textContent = text || '';
  message.classList.toggle('error', error);
}

function fail(err) {
  console.error(err);
  say(String(err.message || err), true);
}

function showStatus(counts) {
  if (counts) app.counts = counts;
  const { labelled = 0, total = app.items.length } = app.counts || {};
  $('name').textContent = app.item ? app.item.name : '';
  $('progress').textContent = `${labelled} / ${total} labelled`;
  const position = app.item ? app.order.indexOf(app.item.id) + 1 : 0;
  $('order').textContent = `image ${position} of ${app.order.length}, ${app.orderNote === 'uncertainty'
    ? 'most uncertain of each kind of scene first' : app.orderNote === 'ranking' ? 'ranking by uncertainty…' : 'name order'}`;
  $('model').textContent = app.model ? `model: ${app.model.checkpoint}` : 'no model';
}

function showTraining(retrain) {
  const button = $('retrain');
  button.textContent = retrain.state === 'running' ? 'stop' : 'retrain';
  let text = '';
  if (retrain.state === 'running') {
    text = `retrain ${retrain.run}: epoch ${retrain.epoch}`;
    if (retrain.val_miou != null) text += `, val mIoU ${retrain.val_miou.toFixed(3)} (best ${retrain.best_miou.toFixed(3)})`;
    text += `, ${retrain.elapsed_min.toFixed(1)} of ${retrain.minutes} min`;
  } else if (retrain.state !== 'idle') {
    text = `retrain ${retrain.run} ${retrain.state}: ${retrain.message}`;
  }
  $('training').textContent = text;
}

async function poll() {
  try {
    const status = await getJSON('/api/status');
    app.model = status.model;
    app.orderNote = status.order_note;
    if (status.order_version !== app.orderVersion) {
      const listing = await getJSON('/api/items');
      app.order = listing.order;
      app.orderVersion = listing.order_version;
    }
    showStatus(status);
    showTraining(status.retrain);
  } catch (err) {
    say(`server unreachable (${err.message})`, true);
  }
  setTimeout(poll, 2000);
}

async function toggleRetrain() {
  try {
    if ($('retrain').textContent === 'stop') {
      showTraining(await getJSON('/api/retrain/stop', { method: 'POST' }));
      return;
    }
    const minutes = Number($('minutes').value) || 5;
    showTraining(await getJSON('/api/retrain', { method: 'POST', body: JSON.stringify({ minutes }),
      headers: { 'Content-Type': 'application/json' } }));
    say(`retraining for ${minutes} min on the saved masks; keep labelling`);
  } catch (err) {
    fail(err);
  }
}

// ------------------------------------------------------------------------------------------------ controls

function selectTool(tool) {
  if (tool !== 'polygon') { app.polygon = []; drawPolygon(); }
  app.tool = tool;
  for (const b of document.querySelectorAll('[data-tool]')) b.classList.toggle('active', b.dataset.tool === tool);
  if (tool === 'superpixel' && app.item) loadSuperpixels().catch(fail);
  if (app.item) drawHints();
  updateCursor();
}

function selectClass(label) {
  if (label >= app.classes.length) return;
  app.cls = label;
  for (const b of document.querySelectorAll('#classes [data-label]')) b.classList.toggle('active', Number(b.dataset.label) === label);
  if (app.tool === 'eraser' || app.tool === 'ignore') selectTool('brush');
}

function setSize(size) {
  app.size = Math.max(1, Math.min(500, size));
  $('size').textContent = app.size;
  updateCursor();
}

function resize(grow) {
  const step = app.size < 10 ? 1 : Math.round(app.size * 0.15);
  setSize(app.size + (grow ? step : -step));
}

function toggleShape() {
  app.square = !app.square;
  $('shape').textContent = app.square ? 'square' : 'round';
  updateCursor();
}

function toggleMask() {
  const hidden = $('mask').classList.toggle('hidden');
  $('toggle-mask').textContent = hidden ? 'show mask' : 'hide mask';
}

function drawPolygon() {
  $('polygon').setAttribute('points', app.polygon.map(([x, y]) => `${x},${y}`).join(' '));
}

function closePolygon() {
  if (app.polygon.length >= 3) {
    beginOp();
    fillPolygon(app.polygon, app.cls);
    endOp();
  }
  app.polygon = [];
  drawPolygon();
}

function addCorner(x, y) {
  const [px, py] = [x + 0.5, y + 0.5], first = app.polygon[0], last = app.polygon[app.polygon.length - 1];
  if (last && last[0] === px && last[1] === py) return;  // the second click of a double-click
  // a click on the first corner (within a few screen pixels) closes the polygon
  if (first && app.polygon.length >= 3 && Math.hypot(first[0] - px, first[1] - py) * app.view.z < 6) {
    closePolygon();
    return;
  }
  app.polygon.push([px, py]);
  drawPolygon();
}

function onPointerDown(ev) {
  if (!app.labels || document.body.dataset.ready !== '1') return;
  const viewport = $('viewport');
  if (ev.button === 1 || ev.button === 2 || (ev.button === 0 && app.spaceDown)) {
    app.pan = { x: ev.clientX - app.view.x, y: ev.clientY - app.view.y };
    viewport.classList.add('panning');
  } else if (ev.button !== 0) {
    return;
  } else {
    const [x, y] = imagePoint(ev), inside = x >= 0 && y >= 0 && x < app.W && y < app.H;
    if (['brush', 'eraser', 'ignore'].includes(app.tool)) {
      beginOp();
      app.drawing = true;
      app.last = [x, y];
      line(x, y, x, y);
      flush();
    } else if (app.tool === 'polygon') {
      addCorner(x, y);
    } else if (inside && app.tool === 'flood') {
      beginOp();
      floodFill(x, y, app.cls, Number($('tolerance').value));
      endOp();
    } else if (inside && app.tool === 'superpixel') {
      const item = app.item;
      loadSuperpixels().then(() => {
        if (item !== app.item) return;
        beginOp();
        superpixelFill(x, y, app.cls);
        endOp();
      }).catch(fail);
    }
  }
  try { viewport.setPointerCapture(ev.pointerId); } catch (_) { /* synthetic events have no capture */ }
  ev.preventDefault();
}

function onPointerMove(ev) {
  if (!app.labels) return;
  if (app.pan) {
    setView(app.view.z, ev.clientX - app.pan.x, ev.clientY - app.pan.y);
    return;
  }
  const [x, y] = imagePoint(ev);
  if (app.drawing) {
    line(app.last[0], app.last[1], x, y);
    flush();
    app.last = [x, y];
  }
  updateCursor([x, y]);
}

function onPointerUp() {
  if (app.drawing) { app.drawing = false; endOp(); }
  if (app.pan) { app.pan = null; $('viewport').classList.remove('panning'); }
}

function onKey(ev) {
  if (ev.target.matches('input, textarea')) return;
  const key = ev.key, lower = key.toLowerCase(), mod = ev.ctrlKey || ev.metaKey;
  const actions = {
    b: () => selectTool('brush'), e: () => selectTool('eraser'), i: () => selectTool('ignore'),
    p: () => selectTool('polygon'), f: () => selectTool('flood'), s: () => selectTool('superpixel'),
    q: toggleShape, '[': () => resize(false), ']': () => resize(true), h: toggleMask, u: nextUnsure,
    n: () => go(1), pagedown: () => go(1), arrowright: () => go(1), pageup: () => go(-1), arrowleft: () => go(-1),
    0: actualSize, home: fit, enter: closePolygon, escape: () => { app.polygon = []; drawPolygon(); },
  };
  let action = null;
  if (mod && lower === 'z') action = ev.shiftKey ? () => step(app.redo, app.undo) : () => step(app.undo, app.redo);
  else if (mod && lower === 'y') action = () => step(app.redo, app.undo);
  else if (mod && lower === 's') action = save;
  else if (!mod && /^[1-9]$/.test(key)) action = () => selectClass(Number(key) - 1);
  else if (!mod && !ev.altKey) action = actions[lower];
  if (key === ' ') { app.spaceDown = true; ev.preventDefault(); return; }
  if (!action) return;
  ev.preventDefault();
  action();
}

function buildClasses() {
  const aside = $('classes');
  aside.replaceChildren();
  const entry = (label, name, swatchClass, colour, key, onClick) => {
    const button = document.createElement('button'), swatch = document.createElement('span');
    swatch.className = `swatch ${swatchClass}`;
    if (colour) swatch.style.background = colour;
    const kbd = document.createElement('kbd');
    kbd.textContent = key;
    button.append(swatch, document.createTextNode(name), kbd);
    if (label !== null) button.dataset.label = label;
    button.title = label === null ? 'ignore: left out of training' : `label ${label}`;
    button.addEventListener('click', onClick);
    aside.append(button);
  };
  app.classes.forEach((c) => entry(c.label, c.name, '', c.colour, c.label < 9 ? String(c.label + 1) : '',
    () => selectClass(c.label)));
  entry(null, 'ignore (255)', 'ignore-swatch', null, 'I', () => selectTool('ignore'));
}

async function init() {
  for (const name of ['image', 'hints']) ctx[name] = $(name).getContext('2d');
  const listing = await getJSON('/api/items');
  Object.assign(app, { dataset: listing.dataset, classes: listing.classes, palette: listing.palette,
    items: listing.items, order: listing.order, orderVersion: listing.order_version,
    orderNote: listing.order_note, model: listing.model });
  buildLut();
  buildClasses();
  selectClass(0);
  selectTool('brush');
  showStatus(listing);
  showTraining(listing.retrain);
  document.title = `${listing.dataset.name} · pixelwise annotate`;

  const viewport = $('viewport');
  viewport.addEventListener('pointerdown', onPointerDown);
  viewport.addEventListener('pointermove', onPointerMove);
  viewport.addEventListener('pointerup', onPointerUp);
  viewport.addEventListener('pointercancel', onPointerUp);
  viewport.addEventListener('pointerleave', () => { app.cursor = null; updateCursor(); });
  viewport.addEventListener('contextmenu', (ev) => ev.preventDefault());
  viewport.addEventListener('dblclick', () => { if (app.tool === 'polygon') closePolygon(); });
  viewport.addEventListener('wheel', (ev) => {
    ev.preventDefault();
    const vp = viewport.getBoundingClientRect();
    zoomAt(ev.clientX - vp.left, ev.clientY - vp.top, Math.exp(-ev.deltaY * 0.0015));
  }, { passive: false });
  document.addEventListener('keydown', onKey);
  document.addEventListener('keyup', (ev) => { if (ev.key === ' ') app.spaceDown = false; });
  document.addEventListener('visibilitychange', () => { if (document.hidden) writeDraft(); });
  // A clicked button keeps the focus, and Space or Enter would click it again: hand the keys back.
  document.addEventListener('click', (ev) => { if (ev.target.closest('button')) ev.target.closest('button').blur(); });

  for (const b of document.querySelectorAll('[data-tool]')) b.addEventListener('click', () => selectTool(b.dataset.tool));
  $('shape').addEventListener('click', toggleShape);
  $('tolerance').addEventListener('input', () => { $('tolerance-value').textContent = $('tolerance').value; });
  $('opacity').addEventListener('input', () => { $('mask').style.opacity = $('opacity').value / 100; });
  $('mask').style.opacity = $('opacity').value / 100;
  $('toggle-mask').addEventListener('click', toggleMask);
  $('fit').addEventListener('click', fit);
  $('undo').addEventListener('click', () => step(app.undo, app.redo));
  $('redo').addEventListener('click', () => step(app.redo, app.undo));
  $('save').addEventListener('click', save);
  $('prev').addEventListener('click', () => go(-1));
  $('next').addEventListener('click', () => go(1));
  $('unsure').addEventListener('click', nextUnsure);
  $('retrain').addEventListener('click', toggleRetrain);
  $('banner-reload').addEventListener('click', () => {
    // The strokes are being thrown away: a draft write still waiting on its timer would store them again,
    // on the stale version, after the delete below and before openItem looks, so every later save conflicts.
    clearTimeout(app.draftTimer);
    // IndexedDB runs transactions on one store in order: the draft is gone before openItem looks for it.
    draftDo('readwrite', (store) => store.delete(draftKey(app.item))).catch(() => {});
    openItem(app.item.id);
  });
  $('banner-overwrite').addEventListener('click', () => { app.version = app.conflictVersion; save(); });

  // Open the image named in the address (a reload stays put), else the first unlabelled one in order.
  const wanted = Number((location.hash.match(/item=(\d+)/) || [])[1]);
  const first = app.order.find((id) => !app.items[id].labelled);
  openItem(app.items[wanted] ? wanted : first ?? app.order[0]);
  setTimeout(poll, 2000);
}

init().catch(fail);
