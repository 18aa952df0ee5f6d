// The "ask a video" page: posts to /v1/inference/{upload,url} with stream=true and shows the
// SSE stream as it arrives (status events, delta events, one done or error event).
"use strict";

const $ = (id) => document.getElementById(id);
const STAGES = ["queued", "fetching", "decoding", "encoding", "generating"];
const PARAMS = ["fps", "max_frames", "max_tokens", "temperature", "seed"];
const VIDEO_PARAMS = new Set(["fps", "max_frames"]);
let running = false;

function showStage(stage) {
  const reached = stage === "done" ? STAGES.length : STAGES.indexOf(stage);
  for (const li of $("stages").children) {
    const at = STAGES.indexOf(li.dataset.stage);
    li.className = at < reached ? "done" : at === reached ? "now" : "";
  }
  $("status").textContent = stage === "done" ? "Done." : `Now: ${stage}…`;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("status").textContent = "Failed.";
}

function params() {
  const out = {};
  for (const name of PARAMS) {
    const value = $(name).value.trim();
    if (value !== "") out[name] = Number(value);
  }
  return out;
}

function request() {
  const file = $("file").files[0];
  const url = $("url").value.trim();
  const prompt = $("prompt").value.trim();
  if (!prompt) throw new Error("Write a prompt first.");
  if (!file && !url) throw new Error("Choose or drop a video, or paste a video URL.");
  const headers = {};
  const key = $("api_key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const chosen = params();
  if (file) {
    const form = new FormData();
    form.append("video", file, file.name);
    form.append("prompt", prompt);
    form.append("stream", "true");
    for (const [name, value] of Object.entries(chosen)) form.append(name, String(value));
    return { label: file.name, prompt, path: "/v1/inference/upload", init: { method: "POST", headers, body: form } };
  }
  const body = { video_url: url, prompt, stream: true, video_params: {}, generation_params: {} };
  for (const [name, value] of Object.entries(chosen)) {
    body[VIDEO_PARAMS.has(name) ? "video_params" : "generation_params"][name] = value;
  }
  headers["Content-Type"] = "application/json";
  return { label: url, prompt, path: "/v1/inference/url", init: { method: "POST", headers, body: JSON.stringify(body) } };
}

async function* sseEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) yield [name, JSON.parse(data)];
    }
  }
}

function addHistory(label, prompt, result, timings) {
  const row = document.createElement("tr");
  const secs = (s) => (s === undefined ? "—" : `${s.toFixed(2)} s`);
  for (const text of [label, prompt, result, secs(timings?.ttft_s), secs(timings?.total_s)]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  $("history").tBodies[0].prepend(row);
  while ($("history").tBodies[0].rows.length > 10) $("history").tBodies[0].deleteRow(-1);
}

async function ask(event) {
  event.preventDefault();
  if (running) return;
  $("error").hidden = true;
  $("answer").textContent = "";
  $("meta").textContent = "";
  let req;
  try {
    req = request();
  } catch (error) {
    showError(error.message);
    return;
  }
  running = true;
  $("submit").disabled = true;
  showStage("queued");
  try {
    const response = await fetch(req.path, req.init);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error?.message || `The server answered ${response.status}.`);
    }
    for await (const [name, data] of sseEvents(response)) {
      if (name === "status") showStage(data.stage);
      else if (name === "delta") $("answer").textContent += data.text;
      else if (name === "error") throw new Error(data.error.message);
      else if (name === "done") {
        $("answer").textContent = data.text;
        const v = data.video;
        const seen = v ? `${v.frames_sampled} frames of ${v.width}×${v.height}, ${v.duration_s.toFixed(1)} s · ` : "";
        $("meta").textContent = `${seen}${data.usage.completion_tokens} tokens (${data.finish_reason}) · TTFT ${data.timings.ttft_s.toFixed(2)} s · total ${data.timings.total_s.toFixed(2)} s`;
        showStage("done");
        addHistory(req.label, req.prompt, "ok", data.timings);
      }
    }
  } catch (error) {
    showError(error.message || String(error));
    addHistory(req.label, req.prompt, `error: ${error.message}`);
  } finally {
    running = false;
    $("submit").disabled = false;
  }
}

function setUp() {
  $("ask").addEventListener("submit", ask);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask").requestSubmit();
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) {
      $("file").files = e.dataTransfer.files;
      $("file").dispatchEvent(new Event("change"));
    }
  });
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    const size = (bytes) => (bytes < 1048576 ? `${Math.ceil(bytes / 1024)} KiB` : `${(bytes / 1048576).toFixed(1)} MiB`);
    $("drop-text").textContent = file ? `${file.name} (${size(file.size)})` : "Drop a video here, or choose a file";
  });
  fetch("/v1/models").then((r) => (r.ok ? r.json() : null)).then((body) => {
    if (body?.data?.length) $("model").textContent = body.data[0].id;
  }).catch(() => {});
}

setUp();
