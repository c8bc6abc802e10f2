// The page side of densemtl_lab.viz.hover.HoverExplorer: one anywidget ES module, no build step.
//
// The kernel sends each image once as binary buffers: uint8 codes and one float32 (low, high) range
// per attention row or per map. Every mouse move is answered here: find the query cell, take that
// row of every pair, colour it through the colour table, draw. An image whose attention is too large
// to send whole ("lazy") asks the kernel for the rows of a cell and keeps them (ROW_CACHE_BYTES).
// The root element's `hoverTimings` lists each redraw: from the input event's timestamp to the end
// of the redraw, in ms (kind "hover", "row" when a row had to come from the kernel, "key", "control").

const MAP_WIDTH = 192; // CSS pixels of one map
const IMAGE_WIDTH = 320; // CSS pixels of the query image
const ROW_CACHE_BYTES = 64 * 2 ** 20;
const TIMINGS_KEPT = 2000;
const MARK = "#00e5ff";
const STYLE = `
.dmtl-hover { font: 12px/1.35 var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  outline: none; padding: 4px; }
.dmtl-hover:focus-visible { outline: 2px solid ${MARK}; }
.dmtl-hover canvas { display: block; image-rendering: pixelated; cursor: crosshair; }
.dmtl-strip, .dmtl-bar { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin-bottom: 6px; }
.dmtl-strip canvas { cursor: pointer; border: 2px solid transparent; }
.dmtl-strip canvas.dmtl-on { border-color: ${MARK}; }
.dmtl-bar button { font: inherit; padding: 1px 8px; }
.dmtl-bar button.dmtl-on { font-weight: bold; border-color: ${MARK}; }
.dmtl-status { font-family: var(--jp-code-font-family, monospace); white-space: nowrap; overflow: hidden;
  height: 1.4em; margin-bottom: 4px; }
.dmtl-body { display: flex; gap: 14px; align-items: flex-start; }
.dmtl-grid { display: grid; gap: 4px 6px; align-items: center; }
.dmtl-grid.dmtl-pending .dmtl-map canvas { opacity: 0.45; }
.dmtl-label { font-weight: bold; white-space: nowrap; }
.dmtl-corner { white-space: pre; font-weight: normal; color: var(--jp-ui-font-color2, #666); }
.dmtl-caption { font-size: 11px; white-space: nowrap; overflow: hidden; max-width: ${MAP_WIDTH}px; }
.dmtl-help { margin-top: 6px; color: var(--jp-ui-font-color2, #666); }
`;

function bytesOf(buffer) {
  if (buffer instanceof ArrayBuffer) return new Uint8Array(buffer);
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** The named arrays of a message, by its header's buffer entries (float32 copied: alignment). */
function unpack(header, buffers) {
  const arrays = {};
  header.buffers.forEach((entry, i) => {
    const bytes = bytesOf(buffers[i]);
    if (entry.dtype === "|u1") arrays[entry.name] = bytes;
    else if (entry.dtype === "<f4") arrays[entry.name] = new Float32Array(bytes.slice().buffer);
    else throw new Error(`hover explorer: buffer ${entry.name} has unexpected dtype ${entry.dtype}`);
  });
  return arrays;
}

/** A canvas showing an RGB uint8 picture of height x width. */
function pictureCanvas(rgb, height, width) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    image.data.set(rgb.subarray(3 * i, 3 * i + 3), 4 * i);
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

/** The colour table (256 x RGB) as packed RGBA words, the byte order of ImageData on little-endian. */
function packedTable(rgb) {
  const table = new Uint32Array(256);
  for (let k = 0; k < 256; k++) {
    table[k] = ((255 << 24) | (rgb[3 * k + 2] << 16) | (rgb[3 * k + 1] << 8) | rgb[3 * k]) >>> 0;
  }
  return table;
}

function decodeImage(header, buffers) {
  const arrays = unpack(header, buffers);
  const [height, width] = header.size;
  const size = height * width * 3;
  const predictions = {};
  header.tasks.forEach((task, t) => {
    predictions[task] = pictureCanvas(arrays.predictions.subarray(t * size, (t + 1) * size), height, width);
  });
  const shape = Object.fromEntries(header.buffers.map((entry) => [entry.name, entry.shape]));
  return { ...header, arrays, shape, picture: pictureCanvas(arrays.image, height, width), predictions,
           rows: new Map(), rowBytes: 0 };
}

/** Query pixel (x, y) -> its cell, row-major over the attention grid (explorer.query_cell). */
function queryCell(data, x, y) {
  const [height, width] = data.size;
  const [gridH, gridW] = data.grid;
  return Math.floor((y * gridH) / height) * gridW + Math.floor((x * gridW) / width);
}

/** What pair `p` shows under `branch` for query `cell`: codes, their range and grid; null if not here yet. */
function mapOf(data, branch, p, cell) {
  if (branch === "correlation") {
    const [gridH, gridW] = data.grid;
    const keys = gridH * gridW;
    if (data.lazy) {
      const rows = data.rows.get(cell);
      if (rows === undefined) return null;
      return { codes: rows.codes.subarray(p * keys, (p + 1) * keys), low: rows.ranges[2 * p],
               high: rows.ranges[2 * p + 1], width: gridW, height: gridH };
    }
    const row = p * data.shape.correlation[1] + cell;
    return { codes: data.arrays.correlation.subarray(row * keys, (row + 1) * keys),
             low: data.arrays.correlation_range[2 * row], high: data.arrays.correlation_range[2 * row + 1],
             width: gridW, height: gridH };
  }
  const [halfH, halfW] = data.half;
  const size = halfH * halfW;
  return { codes: data.arrays[branch].subarray(p * size, (p + 1) * size), low: data.arrays[`${branch}_range`][2 * p],
           high: data.arrays[`${branch}_range`][2 * p + 1], width: halfW, height: halfH };
}

function keepRows(data, cell, arrays) {
  const bytes = arrays.rows.byteLength + arrays.rows_range.byteLength;
  data.rows.set(cell, { codes: arrays.rows, ranges: arrays.rows_range, bytes });
  data.rowBytes += bytes;
  for (const [oldest, rows] of data.rows) {
    if (data.rowBytes <= ROW_CACHE_BYTES) break;
    data.rows.delete(oldest);
    data.rowBytes -= rows.bytes;
  }
}

function element(tag, className, parent, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  if (parent) parent.appendChild(made);
  return made;
}

function sizedCanvas(parent, cssWidth, cssHeight) {
  const canvas = element("canvas", "", parent);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  canvas.cssWidth = cssWidth; // kept: reading the layout on every mouse move would cost a reflow
  canvas.cssHeight = cssHeight;
  return canvas;
}

function render({ model, el }) {
  const table = packedTable(bytesOf(model.get("colourmap")));
  const images = new Map(); // index -> decoded image
  const asked = new Set(); // images requested, not yet here
  const scratch = new Map(); // "w x h" -> {canvas, context, image, words}: maps coloured at their own size
  const state = { index: model.get("image_index"), branch: model.get("branch"), scale: model.get("scale"),
                  query: model.get("query").slice(), pinned: model.get("pinned"), inflight: null, waiting: null,
                  layoutFor: null };
  const root = element("div", "dmtl-hover", el);
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true"); // JupyterLab: our keys are ours
  root.hoverTimings = [];
  element("style", "", root, STYLE);

  const names = model.get("names");
  const strip = element("div", "dmtl-strip", root);
  if (names.length > 1) {
    const [thumbH, thumbW] = model.get("thumbnail_size");
    const thumbs = bytesOf(model.get("thumbnails"));
    names.forEach((name, i) => {
      const thumb = pictureCanvas(thumbs.subarray(i * thumbH * thumbW * 3, (i + 1) * thumbH * thumbW * 3), thumbH, thumbW);
      thumb.title = name;
      thumb.dataset.index = i;
      strip.appendChild(thumb);
    });
  }
  const bar = element("div", "dmtl-bar", root);
  let branchButtons = {}; // branch -> its button, for the image shown
  const labels = model.get("branch_labels");
  const scaleButton = element("button", "", null);
  const status = element("div", "dmtl-status", root); // its own line: its changing text never moves the maps
  const body = element("div", "dmtl-body", root);
  element("div", "dmtl-help", root,
    "mouse: query · click: pin/unpin · arrows: move one cell (shift: one pixel) · b: branch · s: colour scale"
    + (names.length > 1 ? " · [ ]: image" : ""));
  let view = null; // the canvases of the current layout

  function record(kind, since) {
    const ms = performance.now() - since;
    root.hoverTimings.push({ kind, ms, index: state.index, query: state.query.slice(), branch: state.branch });
    if (root.hoverTimings.length > TIMINGS_KEPT) root.hoverTimings.shift();
    status.textContent = `${statusText()} · redraw ${ms.toFixed(1)} ms`;
  }

  function statusText() {
    const data = images.get(state.index);
    if (data === undefined) return "loading the image from the kernel…";
    const [x, y] = state.query;
    const cell = queryCell(data, x, y);
    const row = Math.floor(cell / data.grid[1]);
    const fetched = data.lazy ? ` · rows from the kernel (${data.rows.size} cells kept)` : "";
    return `${data.name}: query (x=${x}, y=${y}), cell (${row}, ${cell - row * data.grid[1]})`
      + `${state.pinned ? " · pinned" : ""}${fetched}`;
  }

  function layout(data) {
    if (!data.branches.includes(state.branch)) state.branch = data.branches[0];
    body.replaceChildren();
    bar.replaceChildren();
    branchButtons = {};
    for (const branch of data.branches) {
      branchButtons[branch] = element("button", "", bar, labels[branch]);
      branchButtons[branch].dataset.branch = branch;
    }
    bar.append(scaleButton);
    const [height, width] = data.size;
    const imageFigure = element("div", "dmtl-figure", body);
    const image = sizedCanvas(imageFigure, IMAGE_WIDTH, Math.round((IMAGE_WIDTH * height) / width));
    image.className = "dmtl-image";
    image.dataset.plane = "image";
    element("div", "dmtl-caption", imageFigure, "image and query cell");
    const grid = element("div", "dmtl-grid", body);
    grid.style.gridTemplateColumns = `max-content repeat(${data.tasks.length}, ${MAP_WIDTH}px)`;
    element("div", "dmtl-label dmtl-corner", grid, "target ↓\nsource →");
    for (const task of data.tasks) element("div", "dmtl-label", grid, task);
    const mapHeight = Math.round((MAP_WIDTH * height) / width);
    const maps = [];
    const predictions = [];
    for (const target of data.tasks) {
      element("div", "dmtl-label", grid, `${target} ←`);
      for (const source of data.tasks) {
        const figure = element("div", source === target ? "dmtl-prediction" : "dmtl-map", grid);
        const canvas = sizedCanvas(figure, MAP_WIDTH, mapHeight);
        canvas.dataset.plane = "map";
        canvas.dataset.target = target;
        canvas.dataset.source = source;
        const caption = element("div", "dmtl-caption", figure, source === target ? `prediction: ${target}` : "");
        if (source === target) predictions.push({ canvas, task: target });
        else maps.push({ canvas, caption, p: data.pairs.findIndex(([t, s]) => t === target && s === source) });
      }
    }
    view = { image, grid, maps, predictions };
    state.layoutFor = data;
    showControls();
  }

  function showControls() {
    for (const [branch, button] of Object.entries(branchButtons)) button.classList.toggle("dmtl-on", branch === state.branch);
    scaleButton.textContent = state.scale === "map" ? "colours: each map its own range" : "colours: one range for all maps";
    for (const thumb of strip.children) thumb.classList.toggle("dmtl-on", Number(thumb.dataset.index) === state.index);
  }

  function colour(source, norm) {
    const key = `${source.width}x${source.height}`;
    let pad = scratch.get(key);
    if (pad === undefined) {
      const canvas = document.createElement("canvas");
      canvas.width = source.width;
      canvas.height = source.height;
      const context = canvas.getContext("2d");
      const image = context.createImageData(source.width, source.height);
      pad = { canvas, context, image, words: new Uint32Array(image.data.buffer) };
      scratch.set(key, pad);
    }
    const { codes } = source;
    const words = pad.words;
    if (norm === null) {
      for (let i = 0; i < codes.length; i++) words[i] = table[codes[i]];
    } else { // decode, then place on the shared range
      const step = (source.high - source.low) / 255;
      const span = norm.high - norm.low;
      const factor = span > 0 ? 255.999 / span : 0;
      const offset = (source.low - norm.low) * factor;
      const slope = step * factor;
      for (let i = 0; i < codes.length; i++) words[i] = table[Math.min(255, Math.max(0, (offset + codes[i] * slope) | 0))];
    }
    pad.context.putImageData(pad.image, 0, 0);
    return pad.canvas;
  }

  function mark(canvas, data, withGrid) {
    const context = canvas.getContext("2d");
    const [height, width] = data.size;
    const [gridH, gridW] = data.grid;
    const sx = canvas.width / width;
    const sy = canvas.height / height;
    const cellW = canvas.width / gridW;
    const cellH = canvas.height / gridH;
    const ratio = window.devicePixelRatio || 1;
    if (withGrid && cellW >= 8 * ratio) {
      context.strokeStyle = "rgba(255, 255, 255, 0.18)";
      context.lineWidth = 1;
      context.beginPath();
      for (let c = 1; c < gridW; c++) { context.moveTo(c * cellW, 0); context.lineTo(c * cellW, canvas.height); }
      for (let r = 1; r < gridH; r++) { context.moveTo(0, r * cellH); context.lineTo(canvas.width, r * cellH); }
      context.stroke();
    }
    const [x, y] = state.query;
    const column = Math.floor((x * gridW) / width);
    const row = Math.floor((y * gridH) / height);
    context.strokeStyle = MARK;
    context.lineWidth = 1.5 * ratio;
    context.strokeRect(column * cellW, row * cellH, cellW, cellH);
    const cx = (x + 0.5) * sx;
    const cy = (y + 0.5) * sy;
    const arm = 5 * ratio;
    context.beginPath();
    context.moveTo(cx - arm, cy); context.lineTo(cx + arm, cy);
    context.moveTo(cx, cy - arm); context.lineTo(cx, cy + arm);
    context.stroke();
  }

  function drawPicture(canvas, picture, data) {
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(picture, 0, 0, canvas.width, canvas.height);
    mark(canvas, data, false);
  }

  /** Redraw for the current state; false while the query's rows are still on their way. */
  function draw() {
    const data = images.get(state.index);
    if (data === undefined) return false;
    if (state.layoutFor !== data) layout(data);
    const cell = queryCell(data, state.query[0], state.query[1]);
    const sources = view.maps.map(({ p }) => mapOf(data, state.branch, p, cell));
    const ready = sources.every((source) => source !== null);
    drawPicture(view.image, data.picture, data);
    for (const { canvas, task } of view.predictions) drawPicture(canvas, data.predictions[task], data);
    view.grid.classList.toggle("dmtl-pending", !ready);
    if (ready) {
      let norm = null;
      if (state.scale === "shared") {
        norm = { low: Math.min(...sources.map((s) => s.low)), high: Math.max(...sources.map((s) => s.high)) };
      }
      const keys = data.grid[0] * data.grid[1];
      view.maps.forEach(({ canvas, caption }, m) => {
        const source = sources[m];
        const context = canvas.getContext("2d");
        context.imageSmoothingEnabled = false;
        context.drawImage(colour(source, norm), 0, 0, canvas.width, canvas.height);
        mark(canvas, data, state.branch === "correlation");
        canvas.dataset.drawnBranch = state.branch; // what this frame shows, for readers and tests
        canvas.dataset.drawnScale = state.scale;
        canvas.dataset.drawnImage = state.index;
        canvas.dataset.drawnCell = cell;
        canvas.dataset.drawnQuery = `${state.query[0]},${state.query[1]}`;
        caption.textContent = state.branch === "correlation"
          ? `max ${(source.high * keys).toFixed(3)}× uniform`
          : `${source.low.toPrecision(3)} to ${source.high.toPrecision(3)}`;
      });
    }
    status.textContent = statusText();
    return ready;
  }

  function askImage(index) {
    if (images.has(index) || asked.has(index)) return;
    asked.add(index);
    model.send({ kind: "image", index });
  }

  function askRows() {
    const data = images.get(state.index);
    if (data === undefined || !data.lazy || state.branch !== "correlation" || state.inflight !== null) return;
    const cell = queryCell(data, state.query[0], state.query[1]);
    if (data.rows.has(cell)) return;
    state.inflight = { index: state.index, cell };
    model.send({ kind: "rows", index: state.index, cell });
  }

  /** Redraw after an input at time `since`; when rows must come from the kernel, time until they are drawn. */
  function answer(kind, since) {
    if (draw()) {
      record(kind, since);
      state.waiting = null;
    } else if (images.has(state.index)) {
      const data = images.get(state.index);
      const cell = queryCell(data, state.query[0], state.query[1]);
      if (state.waiting === null || state.waiting.cell !== cell || state.waiting.index !== state.index) {
        state.waiting = { index: state.index, cell, since };
      }
      askRows();
    }
  }

  function onMessage(message, buffers) {
    if (message.kind === "image") {
      images.set(message.index, decodeImage(message, buffers));
      asked.delete(message.index);
      if (message.index === state.index) answer("control", performance.now());
    } else if (message.kind === "rows") {
      const data = images.get(message.index);
      if (data !== undefined) keepRows(data, message.cell, unpack(message, buffers));
      state.inflight = null;
      const waiting = state.waiting;
      if (waiting !== null && waiting.index === message.index && waiting.cell === message.cell) answer("row", waiting.since);
      else askRows();
    }
  }

  function pixelAt(event) {
    const data = images.get(state.index);
    const canvas = event.target;
    const [height, width] = data.size;
    const x = Math.floor((event.offsetX / canvas.cssWidth) * width);
    const y = Math.floor((event.offsetY / canvas.cssHeight) * height);
    return [Math.min(width - 1, Math.max(0, x)), Math.min(height - 1, Math.max(0, y))];
  }

  function share() { // the kernel hears of pinned queries and controls, not of every mouse move
    model.set("query", state.query.slice());
    model.set("pinned", state.pinned);
    model.set("branch", state.branch);
    model.set("scale", state.scale);
    model.set("image_index", state.index);
    model.save_changes();
  }

  function onPointerMove(event) {
    if (state.pinned || event.target.dataset.plane === undefined || !images.has(state.index)) return;
    const [x, y] = pixelAt(event);
    if (x === state.query[0] && y === state.query[1]) return;
    state.query = [x, y];
    answer("hover", event.timeStamp);
  }

  function onClick(event) {
    const started = event.timeStamp;
    root.focus({ preventScroll: true });
    if (event.target.parentElement === bar && event.target.dataset.branch !== undefined) { state.branch = event.target.dataset.branch; showControls(); }
    else if (event.target === scaleButton) { state.scale = state.scale === "map" ? "shared" : "map"; showControls(); }
    else if (event.target.dataset.index !== undefined && event.target.parentElement === strip) {
      switchImage(Number(event.target.dataset.index));
    } else if (event.target.dataset.plane !== undefined && images.has(state.index)) {
      state.pinned = !state.pinned;
      state.query = pixelAt(event);
    } else return;
    answer("control", started);
    share();
  }

  function switchImage(index) {
    state.index = (index + names.length) % names.length;
    showControls();
    askImage(state.index);
  }

  function onKey(event) {
    const data = images.get(state.index);
    if (data === undefined) return;
    const [height, width] = data.size;
    const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    const branches = data.branches;
    if (event.key in steps) {
      const [dx, dy] = steps[event.key];
      const stepX = event.shiftKey ? 1 : width / data.grid[1];
      const stepY = event.shiftKey ? 1 : height / data.grid[0];
      state.query = [Math.min(width - 1, Math.max(0, Math.round(state.query[0] + dx * stepX))),
                     Math.min(height - 1, Math.max(0, Math.round(state.query[1] + dy * stepY)))];
      state.pinned = true;
    } else if (event.key === "b") state.branch = branches[(branches.indexOf(state.branch) + 1) % branches.length];
    else if (event.key === "s") state.scale = state.scale === "map" ? "shared" : "map";
    else if (event.key === "Enter" || event.key === " ") state.pinned = !state.pinned;
    else if (event.key === "Escape") state.pinned = false;
    else if ((event.key === "[" || event.key === "]") && names.length > 1) switchImage(state.index + (event.key === "]" ? 1 : -1));
    else return;
    event.preventDefault();
    event.stopPropagation();
    showControls();
    answer("key", event.timeStamp);
    share();
  }

  function onPressAnywhere(event) { // a press elsewhere (a notebook cell, say) takes the keys back from us
    if (document.activeElement === root && !root.contains(event.target)) root.blur();
  }

  function follow(name, key) { // the kernel set a trait: show it
    model.on(`change:${name}`, () => {
      const value = model.get(name);
      if (JSON.stringify(value) === JSON.stringify(state[key])) return;
      state[key] = Array.isArray(value) ? value.slice() : value;
      showControls();
      if (name === "image_index") askImage(state.index);
      answer("control", performance.now());
    });
  }

  follow("image_index", "index");
  follow("branch", "branch");
  follow("scale", "scale");
  follow("query", "query");
  follow("pinned", "pinned");
  model.on("msg:custom", onMessage);
  body.addEventListener("pointermove", onPointerMove);
  root.addEventListener("click", onClick);
  root.addEventListener("keydown", onKey);
  document.addEventListener("pointerdown", onPressAnywhere, true);
  status.textContent = statusText();
  showControls();
  askImage(state.index);
  return () => {
    body.removeEventListener("pointermove", onPointerMove);
    root.removeEventListener("click", onClick);
    root.removeEventListener("keydown", onKey);
    document.removeEventListener("pointerdown", onPressAnywhere, true);
  };
}

export default { render };
