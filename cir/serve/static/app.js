// The cir search page: pick a reference (gallery id, browse, random, upload), type a modification, see both stages.
"use strict";

const state = { reference: null, upload: null, truth: null, browseOffset: 0 };
const $ = (id) => document.getElementById(id);

function thumb(id) { return `/api/image/${encodeURIComponent(id)}?thumbnail=true`; }

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function setReference(id) {
  state.reference = id;
  state.upload = null;
  $("upload").value = "";
  $("reference-id").value = id;
  $("reference-image").src = thumb(id);
  $("reference-label").textContent = id;
  $("reference-view").classList.remove("empty");
}

function setUpload(file) {
  state.upload = file;
  state.reference = null;
  $("reference-image").src = URL.createObjectURL(file);
  $("reference-label").textContent = `upload: ${file.name}`;
  $("reference-view").classList.remove("empty");
}

function showThumbs(ids) {
  const box = $("browser");
  box.hidden = false;
  box.replaceChildren(...ids.map((id) => {
    const img = document.createElement("img");
    img.src = thumb(id);
    img.alt = id;
    img.title = id;
    img.dataset.id = id;
    img.addEventListener("click", () => { setReference(id); box.hidden = true; });
    return img;
  }));
}

function rankChange(result) {
  const span = document.createElement("span");
  if (result.stage1_rank == null) { span.textContent = `new → ${result.rank}`; span.className = "same"; return span; }
  const moved = result.stage1_rank - result.rank;
  span.textContent = `${result.stage1_rank} → ${result.rank}` + (moved ? ` (${moved > 0 ? "▲" : "▼"}${Math.abs(moved)})` : "");
  span.className = moved > 0 ? "up" : moved < 0 ? "down" : "same";
  span.dataset.role = "rank-change";
  return span;
}

function showResults(answer) {
  const truth = answer.ground_truth;
  const targets = new Set(truth ? truth.targets : []);
  const members = new Set(truth ? truth.members : []);
  $("results").replaceChildren(...answer.results.map((result) => {
    const card = document.createElement("div");
    card.className = "result" + (targets.has(result.id) ? " target" : members.has(result.id) ? " member" : "");
    card.dataset.id = result.id;
    const img = document.createElement("img");
    img.src = thumb(result.id);
    img.alt = result.id;
    const top = document.createElement("div");
    top.className = "line";
    const rank = document.createElement("b");
    rank.textContent = `#${result.rank}`;
    top.append(rank, rankChange(result));
    const bottom = document.createElement("div");
    bottom.className = "line";
    const id = document.createElement("span");
    id.className = "id";
    id.textContent = result.id;
    const score = document.createElement("span");
    score.textContent = result.score.toFixed(3);
    bottom.append(id, score);
    card.append(img, top, bottom);
    if (result.terms && result.terms.length) {
      const terms = document.createElement("div");
      terms.className = "terms";
      terms.textContent = result.terms.map(([t, w]) => `${t} ${w.toFixed(2)}`).join(", ");
      card.append(terms);
    }
    card.addEventListener("click", () => { setReference(result.id); search(); });
    return card;
  }));
  const ms = Object.entries(answer.ms).map(([stage, v]) => `${stage} ${v.toFixed(1)} ms`).join(" · ");
  $("timing").textContent = `${answer.results.length} results · ${ms}`;
  $("timing").dataset.count = answer.results.length;
  if (truth) {
    const ranks = Object.entries(truth.target_rank).map(([stage, r]) => `${answer.stages[stage] || stage}: ${r ?? "not found"}`);
    $("truth").textContent = `query ${truth.id}: target ${truth.targets.join(", ")}; target rank ${ranks.join("; ")}`;
  }
}

async function search() {
  showError("");
  const text = $("text").value.trim();
  const k = parseInt($("k").value, 10) || 10;
  if (!text) { showError("type a modification first"); return; }
  try {
    let answer;
    if (state.upload) {
      const form = new FormData();
      form.append("image", state.upload);
      form.append("text", text);
      form.append("k", String(k));
      answer = await api("/api/search/upload", { method: "POST", body: form });
    } else if (state.reference) {
      const queryId = state.truth && state.truth.reference === state.reference && state.truth.text === text ? state.truth.id : null;
      answer = await api("/api/search", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reference: state.reference, text, k, query_id: queryId }) });
    } else { showError("choose a reference image first"); return; }
    showResults(answer);
    document.body.dataset.searches = String(parseInt(document.body.dataset.searches || "0", 10) + 1);
  } catch (err) { showError(err.message); }
}

async function loadQuery(id) {
  showError("");
  try {
    const query = await api(`/api/query/${encodeURIComponent(id)}`);
    state.truth = query;
    setReference(query.reference);
    $("text").value = query.text;
    await search();
  } catch (err) { showError(err.message); }
}

async function start() {
  try {
    const info = await api("/api/info");
    const model = info.model ? `${info.model} (${info.pretrained || info.weights})` : "custom stages";
    $("about").textContent = `${info.pipeline} · ${model} · gallery ${info.gallery.name}, ${info.gallery.images} images` +
      (info.benchmark ? ` · benchmark ${info.benchmark.label}` : "");
    $("benchmark-panel").hidden = !info.benchmark;
    $("k").max = info.limits.k;
  } catch (err) { showError(err.message); }
  $("use-id").addEventListener("click", () => { const id = $("reference-id").value.trim(); if (id) setReference(id); });
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) setUpload(e.target.files[0]); });
  $("browse").addEventListener("click", async () => {
    const page = await api(`/api/gallery?offset=${state.browseOffset}&limit=48`);
    state.browseOffset = (state.browseOffset + 48) % Math.max(page.total, 1);
    showThumbs(page.ids);
  });
  $("random").addEventListener("click", async () => showThumbs((await api("/api/gallery?random=true&limit=24")).ids));
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("query-form").addEventListener("submit", (e) => { e.preventDefault(); const id = $("query-id").value.trim(); if (id) loadQuery(id); });
}

start();
