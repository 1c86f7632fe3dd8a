// The demo page: calls /metadata once, then /predict?overlay=true for each image.
// It uses only the public API, so it doubles as a worked example of a browser client.
// document.body.dataset.state is "idle", "busy", "done" or "error" (tests wait on it).

const $ = (selector) => document.querySelector(selector);
const TOKEN_KEY = "scene-mtl-token";
const STAGES = ["decode", "preprocess", "queue", "inference", "postprocess", "encode", "total"];

let classColours = new Map(); // train id -> "rgb(r, g, b)"
let inputUrl = null;

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
  swatch.style.background = classColours.get(trainId) ?? "transparent";
  label.append(swatch, name);
  return label;
}

function showSigma(taskUncertainty) {
  // The tasks and their order are the model card's.
  fillTable("#sigma", Object.entries(taskUncertainty).map(([task, entry]) =>
    [task, entry.sigma.toFixed(3), entry.log_variance.toFixed(3)]));
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
  const card = await response.json();
  classColours = new Map(card.classes.map((c) => [c.train_id, `rgb(${c.color.join(", ")})`]));
  const miou = card.metrics?.semantic_miou;
  $("#model-line").textContent = `${card.name} ${card.version} · ${card.backbone} · ` +
    `trained at ${card.input.height}×${card.input.width}` +
    (typeof miou === "number" ? ` · val mIoU ${miou.toFixed(1)}%` : "");
  showSigma(card.task_uncertainty);
  setStatus("Choose an image or generate a scene.", "idle");
}

function showPrediction(result) {
  const png = (base64) => `data:image/png;base64,${base64}`;
  $("#semantic-image").src = png(result.overlay.png);
  $("#instances-image").src = png(result.overlay.instances_png);
  $("#depth-image").src = png(result.overlay.depth_png);
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
  setStatus(`${result.width}×${result.height} px · ${count} instance${count === 1 ? "" : "s"} · ` +
    `${result.model.execution_provider} · ${result.timings_ms.total.toFixed(0)} ms`, "done");
}

async function predict(image) {
  if (inputUrl) URL.revokeObjectURL(inputUrl);
  inputUrl = URL.createObjectURL(image);
  $("#input-image").src = inputUrl;
  setStatus("Predicting…", "busy");
  const query = new URLSearchParams({ overlay: "true", overlay_alpha: $("#alpha").value });
  const form = new FormData();
  form.append("image", image, image.name ?? "image.png");
  try {
    const response = await fetch(`/predict?${query}`, { method: "POST", body: form, headers: authHeaders() });
    if (!response.ok) {
      setStatus(`The service refused the image: ${await errorText(response)}`, "error");
      return;
    }
    showPrediction(await response.json());
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

$("#token").value = sessionStorage.getItem(TOKEN_KEY) ?? "";
$("#token").addEventListener("change", () => {
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  loadMetadata();
});
$("#image-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) predict(file);
});
$("#sample-button").addEventListener("click", predictSample);
document.body.dataset.state = "idle";
loadMetadata();
