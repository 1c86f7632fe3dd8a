// The demo page: calls /metadata once, then /predict for each image, and draws the pictures
// itself from the class, instance and depth maps (drawing.js), so an answer costs what the
// same request from any client costs. It uses only the public API, so it doubles as a
// worked example of a browser client.
// document.body.dataset.state is "idle", "busy", "done" or "error" (tests wait on it); after
// each prediction dataset.uploadBytes, answerBytes, prepareMs, requestMs and drawMs say what
// it cost (bench/demo_page.py reads them).

import { classPicture, depthPicture, instancePicture } from "./drawing.js";
import { decodeGreyPng } from "./png.js";

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "scene-mtl-token";
const STAGES = ["decode", "preprocess", "queue", "inference", "postprocess", "encode", "total"];
// Uploads are scaled down, aspect ratio kept, to the smallest size that covers this many
// times the model's input on both sides: the model sees no more, and the service's own
// resize (the filter training used) still makes the last step.
const UPLOAD_MARGIN = 2;
const SEEN_IOU = 50; // per-class IoU (%) at or above which the note says the model finds a class
const MISSED_IOU = 20; // and below which it says the model misses it (in between: finds in part)

let card = null;
let palette = new Map(); // train id -> [r, g, b]
let inputUrl = null;
let shown = null; // the last answer with its decoded maps, redrawn when the opacity changes

function setStatus(text, state) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", state === "error");
  document.body.dataset.state = state;
}

function authHeaders() {
  const token = $("#token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// The service's errors are {"error": {"code", "message"}}; anything else is shown as is.
async function errorText(response) {
  try {
    const body = await response.json();
    if (body.error) return `${body.error.message} (${response.status} ${body.error.code})`;
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

function fillTable(selector, rows) {
  const body = $(`${selector} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const row = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = cell;
      row.append(td);
    }
    return row;
  }));
}

function classLabel(name, trainId) {
  const label = document.createElement("span");
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  const colour = palette.get(trainId);
  swatch.style.background = colour ? `rgb(${colour.join(", ")})` : "transparent";
  label.append(swatch, name);
  return label;
}

function showSigma(taskUncertainty) {
  // The tasks and their order are the model card's.
  fillTable("#sigma", Object.entries(taskUncertainty).map(([task, entry]) =>
    [task, entry.sigma.toFixed(3), entry.log_variance.toFixed(3)]));
}

// What the card's quality figures were measured on: the validation data of its training source.
function measuredOn(training) {
  const source = training?.data_source;
  if (source === "procedural") return "generated (procedural) validation scenes, not real photos";
  if (source === "camvid") return "CamVid validation frames (real street photos)";
  return source ? `${source} validation data` : "the exporter's validation data";
}

// The card's mIoU for the page's header: over the classes its validation data labels when
// the card has that figure (a dataset that labels 11 of the 19 classes scores the model's
// other 8 as 0 in the plain mean), else over every class.
function headlineMiou(card) {
  const labelled = card.metrics?.semantic_miou_labelled;
  const plain = card.metrics?.semantic_miou;
  const where = measuredOn(card.training);
  if (typeof labelled === "number") return ` · mIoU ${labelled.toFixed(1)}% over the classes labelled in ${where}`;
  return typeof plain === "number" ? ` · mIoU ${plain.toFixed(1)}% on ${where}` : "";
}

function paragraph(text) {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}

// A few sentences from the model card: its input size, its training data and, per class,
// what it finds and misses on its validation data (labelled as such).
function describeModel() {
  const { height, width } = card.input;
  const mix = card.training?.data_mix;
  // One decimal where a share needs it: 3 in 8 is 37.5%, and 38% + 63% would not add up.
  const percent = (share) => Number((100 * share).toFixed(1));
  const sources = mix
    ? Object.entries(mix).map(([name, share]) => `${name} ${percent(share)}%`).join(", ")
    : card.training?.data_source ?? "unstated data";
  const lines = [
    `It sees every image squeezed to ${width}×${height} pixels, whatever its size, so thin or distant ` +
      "things (poles, signs, people far away) can vanish. It was trained on street scenes seen from a " +
      `car (${sources}); other photos (indoors, people close up, from above) give maps without meaning.`,
  ];
  const perClass = card.metrics?.semantic_iou_per_class;
  if (perClass) {
    const where = measuredOn(card.training);
    const named = (test) => Object.entries(perClass).filter(([name, iou]) => test(iou, name));
    const list = (entries) => entries.map(([name, iou]) => `${name} ${iou.toFixed(0)}%`).join(", ");
    // Classes the model predicted where the data has no such label score 0 whatever the
    // model does: they are named apart, not as misses.
    const unlabelled = new Set(card.metrics.semantic_unlabelled_classes ?? []);
    const scored = (iou, name) => iou !== null && !unlabelled.has(name);
    // Sorted on the whole percent shown, so "20%" is never listed as a miss.
    const shown = (iou) => Math.round(iou);
    const found = named((iou, name) => scored(iou, name) && shown(iou) >= SEEN_IOU);
    const partly = named(
      (iou, name) => scored(iou, name) && shown(iou) >= MISSED_IOU && shown(iou) < SEEN_IOU,
    );
    const missed = named((iou, name) => scored(iou, name) && shown(iou) < MISSED_IOU);
    const never = named((iou) => iou === null).map(([name]) => name);
    if (found.length) lines.push(`Finds (IoU on ${where}): ${list(found)}.`);
    if (partly.length) lines.push(`Finds in part: ${list(partly)}.`);
    if (missed.length) lines.push(`Mostly misses: ${list(missed)}.`);
    if (unlabelled.size) lines.push(`Not labelled in that data, so not scored: ${[...unlabelled].join(", ")}.`);
    if (never.length) lines.push(`Absent from that data, so never checked: ${never.join(", ")}.`);
  }
  lines.push("Depth comes back in metres but is only as good as the depth the training data had.");
  $("#model-note-text").replaceChildren(...lines.map(paragraph));
}

async function loadMetadata() {
  const response = await fetch("/metadata", { headers: authHeaders() });
  if (response.status === 503) {
    setStatus("The model is loading…", "busy");
    setTimeout(loadMetadata, 1000);
    return;
  }
  if (!response.ok) {
    setStatus(`Cannot read the model card: ${await errorText(response)}. ` +
      "If the server needs a token, enter it under Options.", "error");
    return;
  }
  card = await response.json();
  palette = new Map(card.classes.map((c) => [c.train_id, c.color]));
  $("#model-line").textContent = `${card.name} ${card.version} · ${card.backbone} · ` +
    `trained at ${card.input.height}×${card.input.width}${headlineMiou(card)}`;
  describeModel();
  showSigma(card.task_uncertainty);
  setStatus("Choose an image or generate a scene.", "idle");
}

// The image to upload: the file itself, or a JPEG scaled down (aspect ratio kept, EXIF
// orientation applied) when it is larger than the model can use. `bitmap` is null when the
// browser cannot read the file; the service then says what is wrong with it.
async function uploadable(file) {
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(file);
  } catch (_) {
    return { blob: file, bitmap: null, scaledFrom: null };
  }
  if (!card) return { blob: file, bitmap, scaledFrom: null };
  const scale = Math.min(1, UPLOAD_MARGIN * Math.max(
    card.input.height / bitmap.height, card.input.width / bitmap.width));
  if (scale >= 1) return { blob: file, bitmap, scaledFrom: null };
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  const blob = await canvas.convertToBlob({ type: "image/jpeg", quality: 0.92 });
  return { blob, bitmap, scaledFrom: [bitmap.width, bitmap.height] };
}

// The uploaded picture at the maps' size, for drawing the maps over it.
async function photoAt(source, width, height) {
  const bitmap = source instanceof ImageBitmap ? source : await createImageBitmap(source);
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0, width, height);
  return context.getImageData(0, 0, width, height);
}

function paint(selector, picture) {
  const canvas = $(selector);
  canvas.width = picture.width;
  canvas.height = picture.height;
  canvas.getContext("2d").putImageData(picture, 0, 0);
  canvas.hidden = false;
}

function drawPictures() {
  const { photo, semantic, instances, depth, result } = shown;
  const alpha = Number($("#alpha").value);
  paint("#semantic-image", classPicture(photo, semantic, instances, palette, alpha));
  paint("#instances-image", instancePicture(photo, instances, alpha));
  paint("#depth-image", depthPicture(depth, result.depth.scale_to_metres));
}

function showTables(result, scaledFrom) {
  const depth = result.depth;
  $("#depth-caption").textContent = depth.min_m === null
    ? "Depth: all sky"
    : `Depth: ${depth.min_m.toFixed(1)} m (bright) to ${depth.beyond_range ? "beyond " : ""}`
      + `${depth.max_m.toFixed(1)} m (dark); sky black`;
  showSigma(result.task_uncertainty);
  fillTable("#classes", result.semantic.classes.map((c) => [
    classLabel(c.name, c.train_id), `${(100 * c.pixel_fraction).toFixed(1)}%`, c.mean_confidence.toFixed(2),
  ]));
  fillTable("#instances", result.instances.items.map((item) => [
    String(item.id), classLabel(item.class, item.class_id), String(item.pixel_count), item.bbox.join(", "),
  ]));
  fillTable("#timings", STAGES.map((stage) => [stage, result.timings_ms[stage].toFixed(1)]));

  const count = result.instances.items.length;
  const scaled = scaledFrom ? ` · scaled from ${scaledFrom[0]}×${scaledFrom[1]} in the browser` : "";
  const shrunk = result.resolution.returned === "scaled" ? ` · maps scaled by the service to fit its budget` : "";
  setStatus(`${result.width}×${result.height} px${scaled}${shrunk} · ${count} instance${count === 1 ? "" : "s"} · ` +
    `${result.model.execution_provider} · ${result.timings_ms.total.toFixed(0)} ms`, "done");
}

async function predict(file) {
  if (inputUrl) URL.revokeObjectURL(inputUrl);
  inputUrl = URL.createObjectURL(file);
  $("#input-image").src = inputUrl;
  setStatus("Predicting…", "busy");
  const started = performance.now();
  try {
    const { blob, bitmap, scaledFrom } = await uploadable(file);
    const prepared = performance.now();
    const form = new FormData();
    form.append("image", blob, file.name ?? "image");
    const response = await fetch("/predict", { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      setStatus(`The service refused the image: ${await errorText(response)}`, "error");
      return;
    }
    const text = await response.text();
    const answered = performance.now();
    const result = JSON.parse(text);
    const [semantic, instances, depth, photo] = await Promise.all([
      decodeGreyPng(result.semantic.png),
      decodeGreyPng(result.instances.png),
      decodeGreyPng(result.depth.png),
      photoAt(bitmap ?? blob, result.width, result.height),
    ]);
    shown = { photo, semantic, instances, depth, result };
    drawPictures();
    Object.assign(document.body.dataset, {
      uploadBytes: blob.size,
      answerBytes: text.length,
      prepareMs: (prepared - started).toFixed(1),
      requestMs: (answered - prepared).toFixed(1),
      drawMs: (performance.now() - answered).toFixed(1),
    });
    showTables(result, scaledFrom);
  } catch (error) {
    setStatus(`The request failed: ${error.message}`, "error");
  }
}

async function predictSample() {
  const seed = $("#seed").value || "0";
  setStatus(`Fetching sample ${seed}…`, "busy");
  try {
    const response = await fetch(`/demo/sample.png?seed=${encodeURIComponent(seed)}`, { headers: authHeaders() });
    if (!response.ok) {
      setStatus(`No sample image: ${await errorText(response)}`, "error");
      return;
    }
    const blob = await response.blob();
    await predict(new File([blob], `scene-${seed}.png`, { type: "image/png" }));
  } catch (error) {
    setStatus(`The request failed: ${error.message}`, "error");
  }
}

// Drag and drop: a file dropped anywhere on the page is predicted; the browser must not open it.
let dragDepth = 0;
document.addEventListener("dragenter", (event) => {
  event.preventDefault();
  dragDepth += 1;
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) document.body.classList.remove("dragging");
});
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  document.body.classList.remove("dragging");
  const [file] = event.dataTransfer?.files ?? [];
  if (file) predict(file);
  else setStatus("Drop an image file (PNG, JPEG or WebP).", "error");
});

$("#token").value = sessionStorage.getItem(TOKEN_KEY) ?? "";
$("#token").addEventListener("change", () => {
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  loadMetadata();
});
$("#image-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) predict(file);
});
$("#alpha").addEventListener("input", () => { if (shown) drawPictures(); });
$("#sample-button").addEventListener("click", predictSample);
document.body.dataset.state = "idle";
loadMetadata();
