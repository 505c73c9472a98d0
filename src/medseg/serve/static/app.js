// medseg serve: the page. Uploads go one by one to POST /api/segment (the server queues them for its one model);
// the viewer draws the image and the mask on a canvas; a dragged box asks LiteMedSAM for that object.
"use strict";

const $ = (id) => document.getElementById(id);
const items = [];          // {key, file, name, status, result, error, li}
let current = null;        // the item shown
let slice = 0;
let images = {};           // cache: url -> HTMLImageElement
let drag = null;           // box being drawn, canvas pixels {x0, y0, x1, y1}
let busy = false;

function api(path, options) {
  return fetch(path, options).then(async (r) => {
    const body = r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new Error((body && body.detail) || `${r.status} ${r.statusText}`);
    return body;
  });
}

function load(url) {
  if (images[url]) return Promise.resolve(images[url]);
  return new Promise((ok, fail) => {
    const im = new Image();
    im.onload = () => { images[url] = im; ok(im); };
    im.onerror = () => fail(new Error(`cannot load ${url}`));
    im.src = url;
  });
}

function fmt(p) { return p == null ? "–" : (100 * p).toFixed(1) + " %"; }

function addFiles(files) {
  for (const file of files) {
    const li = document.createElement("li");
    const item = {key: items.length, file, name: file.name, status: "queued", li};
    li.dataset.name = file.name;
    li.onclick = () => show(item);
    items.push(item);
    $("gallery").appendChild(li);
    render(item);
  }
  pump();
}

function render(item) {
  const r = item.result;
  const thumb = r ? `<img alt="" src="/api/results/${r.id}/overlay.png?slice=${Math.floor(r.slices / 2)}&v=${r.area_px}">`
                  : `<img alt="">`;
  const what = item.status === "error" ? item.error
             : r ? `${r.task ?? r.engine} ${fmt(r.probability)}` : item.status;
  item.li.className = `${item.status}${current === item ? " selected" : ""}`;
  item.li.innerHTML = `${thumb}<div class="name"></div><div class="status-${item.status}"></div>`;
  item.li.querySelector(".name").textContent = item.name;
  item.li.querySelector(`.status-${item.status}`).textContent = what;
  item.li.dataset.status = item.status;
}

async function pump() {
  if (busy) return;
  busy = true;
  const todo = () => items.filter((i) => i.status === "queued");
  const total = items.length;
  $("progress").hidden = false;
  while (todo().length) {
    const item = todo()[0];
    item.status = "working";
    render(item);
    progress(total);
    const form = new FormData();
    form.append("file", item.file, item.name);
    try {
      item.result = await api("/api/segment", {method: "POST", body: form});
      item.status = "done";
      if (!current) show(item);
    } catch (e) {
      item.status = "error";
      item.error = e.message;
    }
    render(item);
    progress(total);
  }
  busy = false;
}

function progress(total) {
  const done = items.filter((i) => i.status === "done" || i.status === "error").length;
  $("bar").max = total; $("bar").value = done;
  $("progress-text").textContent = `${done} / ${items.length} segmented`;
}

async function show(item) {
  const previous = current;
  current = item;
  if (previous) render(previous);
  render(item);
  $("empty").hidden = true;
  $("viewer").hidden = false;
  $("message").hidden = true;
  $("title").textContent = item.name;
  if (item.status === "error") { message(item.error); $("facts").textContent = ""; clear(); return; }
  if (!item.result) { $("facts").textContent = item.status + "…"; clear(); return; }
  const r = item.result;
  slice = Math.min(slice, r.slices - 1);
  if (r.slices > 1) { $("slice-box").hidden = false; $("slice").max = r.slices - 1; $("slice").value = slice; }
  else { $("slice-box").hidden = true; slice = 0; }
  facts(r);
  $("undo").disabled = !r.can_undo;
  $("dl-mask").href = `/api/results/${r.id}/mask`;
  $("dl-overlay").href = `/api/results/${r.id}/overlay.png?slice=${slice}`;
  $("dl-overlay").download = item.name.replace(/\.[^.]+$/, "") + "_overlay.png";
  await draw();
}

function facts(r) {
  const s = r.per_slice[slice];
  const area = s.area_mm2 == null ? `${s.area_px} px` : `${s.area_px} px = ${s.area_mm2.toFixed(1)} mm²`;
  const sure = r.confident ? "" : ` <span class="unsure">(unsure)</span>`;
  $("facts").innerHTML = `task <b></b> · probability <b>${fmt(s.probability)}</b>${sure} · engine <b>${s.engine}</b>`
    + ` · area <b>${area}</b> · ${r.width}×${r.height}${r.slices > 1 ? ` · slice ${slice + 1}/${r.slices}` : ""}`;
  $("facts").querySelector("b").textContent = s.task ?? "–";
  $("slice-n").textContent = `${slice + 1}/${r.slices}`;
}

function clear() {
  const c = $("canvas");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

async function draw() {
  const r = current && current.result;
  if (!r) return;
  const [im, mask] = await Promise.all([
    load(`/api/results/${r.id}/image.png?slice=${slice}`),
    load(`/api/results/${r.id}/mask.png?slice=${slice}&v=${r.per_slice[slice].area_px}-${r.can_undo}`)]);
  const c = $("canvas");
  c.width = im.width; c.height = im.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(im, 0, 0);
  const tmp = document.createElement("canvas");
  tmp.width = im.width; tmp.height = im.height;
  const t = tmp.getContext("2d");
  t.drawImage(mask, 0, 0);
  const m = t.getImageData(0, 0, im.width, im.height);
  const out = ctx.getImageData(0, 0, im.width, im.height);
  const alpha = Number($("opacity").value);
  const outline = $("outline").checked;
  const W = im.width, H = im.height, on = (x, y) => x >= 0 && y >= 0 && x < W && y < H && m.data[4 * (y * W + x)] > 127;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    if (!on(x, y)) continue;
    const edge = !on(x - 1, y) || !on(x + 1, y) || !on(x, y - 1) || !on(x, y + 1);
    if (outline && !edge) continue;
    const a = outline ? 1 : alpha, k = 4 * (y * W + x);
    out.data[k] = (1 - a) * out.data[k] + a * 255;
    out.data[k + 1] = (1 - a) * out.data[k + 1] + a * 0;
    out.data[k + 2] = (1 - a) * out.data[k + 2] + a * 255;
  }
  ctx.putImageData(out, 0, 0);
  if (drag) {
    ctx.strokeStyle = "#00e0ff"; ctx.lineWidth = Math.max(1, W / 300);
    ctx.strokeRect(drag.x0, drag.y0, drag.x1 - drag.x0, drag.y1 - drag.y0);
  }
}

function message(text) { $("message").textContent = text; $("message").hidden = false; }

function toPixels(ev) {
  const c = $("canvas"), rect = c.getBoundingClientRect();
  return {x: (ev.clientX - rect.left) * c.width / rect.width, y: (ev.clientY - rect.top) * c.height / rect.height};
}

$("canvas").addEventListener("mousedown", (ev) => {
  if (!current || !current.result) return;
  const p = toPixels(ev);
  drag = {x0: p.x, y0: p.y, x1: p.x, y1: p.y};
});
$("canvas").addEventListener("mousemove", (ev) => {
  if (!drag) return;
  const p = toPixels(ev);
  drag.x1 = p.x; drag.y1 = p.y;
  draw();
});
window.addEventListener("mouseup", async () => {
  if (!drag) return;
  const b = drag;
  drag = null;
  if (Math.abs(b.x1 - b.x0) < 3 || Math.abs(b.y1 - b.y0) < 3) { draw(); return; }
  const item = current;
  try {
    item.result = await api(`/api/results/${item.result.id}/box`, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({slice, box: [b.x0, b.y0, b.x1, b.y1]})});
    $("message").hidden = true;
  } catch (e) { message(e.message); }
  render(item);
  show(item);
});
$("undo").onclick = async () => {
  const item = current;
  try { item.result = await api(`/api/results/${item.result.id}/undo`, {method: "POST"}); }
  catch (e) { message(e.message); }
  render(item);
  show(item);
};
$("route-batch").onclick = async () => {
  $("route-batch").disabled = true;
  $("batch-text").textContent = "routing…";
  try {
    const out = await api("/api/route-batch", {method: "POST"});
    for (const r of out.results) {
      const item = items.find((i) => i.result && i.result.id === r.id);
      if (item) { item.result = r; render(item); }
    }
    const moves = out.changed.map((c) => `${c.name}: ${c.from} → ${c.to}`);
    $("batch-text").textContent = out.changed.length
      ? `${out.changed.length} of ${out.images} re-routed (${moves.slice(0, 3).join("; ")}${moves.length > 3 ? " …" : ""})`
      : `no image changed task (${out.images} routed as one dataset)`;
    if (current) show(current);
  } catch (e) { $("batch-text").textContent = e.message; }
  $("route-batch").disabled = false;
};
$("opacity").oninput = draw;
$("outline").onchange = draw;
$("slice").oninput = () => { slice = Number($("slice").value); show(current); };

const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => addFiles(e.dataTransfer.files));
$("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });

api("/api/models").then((m) => {
  $("batch").hidden = m.model !== "universal";
  $("model").textContent = `model: ${m.model}` + (m.tasks.length ? ` · ${m.tasks.length} tasks` : "")
    + (m.boxes ? " · box corrections by LiteMedSAM" : "") + ` · uploads up to ${m.max_upload_mb} MB`;
}).catch((e) => { $("model").textContent = e.message; });
