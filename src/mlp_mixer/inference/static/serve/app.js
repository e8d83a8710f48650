// The page behind GET /: pick or drop an image, see the top-5 and the patch grid the model sees.
// Served by the app itself (no CDN), so it works offline.
"use strict";
const $ = (selector) => document.querySelector(selector);
let model = null;

async function loadModel() {
  const response = await fetch("/v1/model");
  model = await response.json();
  const [h, w] = model.preprocessing.image_size;
  const p = model.model_config.patch_size;
  const name = model.variant ? `Mixer-${model.variant}` : "Mixer";
  $("#model").textContent = `${name}: ${h}×${w} input, ${(h / p) * (w / p)} patches of ${p}×${p}, ` +
    `${model.classes.length} classes, ${model.backend} backend`;
  document.body.dataset.state = "ready";
}

// The region of the original image the model sees: eval_transform's resize (shorter side to
// image_size / crop_pct for a square input, both sides otherwise) then the center crop.
function cropBox(image) {
  const [h, w] = model.preprocessing.image_size;
  const pct = model.preprocessing.crop_pct;
  const [iw, ih] = [image.naturalWidth, image.naturalHeight];
  let sx, sy;
  if (h === w) {
    sx = sy = Math.round(h / pct) / Math.min(iw, ih);
  } else {
    sx = Math.round(w / pct) / iw;
    sy = Math.round(h / pct) / ih;
  }
  const [cw, ch] = [w / sx, h / sy];
  return [(iw - cw) / 2, (ih - ch) / 2, cw, ch];
}

function drawView(image) {
  const [h, w] = model.preprocessing.image_size;
  const p = model.model_config.patch_size;
  const scale = 336 / Math.max(h, w);
  const canvas = $("#canvas");
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  // First at the model's resolution, then enlarged without smoothing: the pixels the model gets.
  const small = document.createElement("canvas");
  [small.width, small.height] = [w, h];
  const sctx = small.getContext("2d");
  sctx.filter = model.model_config.in_channels === 1 ? "grayscale(1)" : "none";
  sctx.drawImage(image, ...cropBox(image), 0, 0, w, h);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "rgba(255, 255, 255, 0.8)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let x = p; x < w; x += p) { ctx.moveTo(x * scale + 0.5, 0); ctx.lineTo(x * scale + 0.5, canvas.height); }
  for (let y = p; y < h; y += p) { ctx.moveTo(0, y * scale + 0.5); ctx.lineTo(canvas.width, y * scale + 0.5); }
  ctx.stroke();
  $("#caption").textContent = `What the model sees: ${w}×${h} pixels after resize and center crop, ` +
    `cut into ${(w / p) * (h / p)} patches of ${p}×${p} (the tokens).`;
}

function showResults(predictions) {
  const list = $("#results");
  list.replaceChildren(...predictions.map((p, rank) => {
    const item = document.createElement("li");
    item.dataset.rank = String(rank + 1);
    item.innerHTML = '<div class="row"><span class="label"></span><span class="prob"></span></div>' +
      '<div class="bar"></div>';
    item.querySelector(".label").textContent = p.class;
    item.querySelector(".prob").textContent = `${(100 * p.probability).toFixed(1)}%`;
    item.querySelector(".bar").style.width = `${100 * p.probability}%`;
    return item;
  }));
}

async function classify(file) {
  document.body.dataset.state = "busy";
  $("#view").hidden = false;
  $("#error").hidden = true;
  $("#results").replaceChildren();
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => { drawView(image); URL.revokeObjectURL(url); };
  image.src = url;
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const response = await fetch("/v1/predict?topk=5", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
    showResults(body.results[0].predictions);
    document.body.dataset.state = "done";
  } catch (err) {
    $("#error").textContent = String(err.message || err);
    $("#error").hidden = false;
    document.body.dataset.state = "error";
  }
}

const drop = $("#drop");
$("#file").addEventListener("change", (event) => event.target.files[0] && classify(event.target.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) classify(event.dataTransfer.files[0]);
});
loadModel().catch((err) => { $("#model").textContent = `cannot load the model: ${err}`; });
