// The radiologist's page: upload an image, view it, find similar cases, write and edit a draft report.
// Plain DOM code against the REST API; every request carries the API key when one is entered.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, report: null };

function headers() {
  const key = $("api-key").value.trim();
  localStorage.setItem("kgreport-api-key", key);
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

// <img> cannot send the key header: thumbnails are fetched and shown as object URLs.
async function imageFrom(path, img) {
  try {
    const blob = await (await api(path)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (err) {
    img.alt = `thumbnail unavailable: ${err.message}`;
  }
}

async function loadIndexes() {
  try {
    const { indexes } = await (await api("/v1/indexes")).json();
    $("index").replaceChildren(...indexes.map((i) => element("option", { value: i.name, textContent: `${i.name} (${i.cases ?? "?"} cases)` })));
  } catch (err) {
    setStatus(`indexes: ${err.message}`, true);
  }
}

function imageForm(extra = {}) {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  for (const [key, value] of Object.entries(extra)) form.append(key, value);
  return form;
}

async function preview() {
  if (!state.file) return;
  $("preview-note").textContent = "rendering…";
  try {
    const blob = await (await api("/v1/render", { method: "POST", body: imageForm({ window: $("window").value }) })).blob();
    $("preview").src = URL.createObjectURL(blob);
    $("preview-note").textContent = state.file.name;
  } catch (err) {
    $("preview").removeAttribute("src");
    $("preview-note").textContent = `cannot show this file: ${err.message}`;
  }
}

async function search() {
  setStatus("searching…");
  try {
    const result = await (await api("/v1/search", { method: "POST", body: imageForm({ index: $("index").value, k: $("k").value }) })).json();
    const p = result.predicted;
    $("predicted").textContent = `predicted: ${p.modality ?? "?"} (${(p.modality_confidence * 100).toFixed(0)}%), ${p.body_region ?? "?"} (${(p.body_region_confidence * 100).toFixed(0)}%)` + (p.location ? `, ${p.location} (${(p.location_confidence * 100).toFixed(0)}%)` : "");
    $("hits").replaceChildren(...result.hits.map((hit) => {
      const img = element("img", { alt: `case ${hit.case_id}` });
      imageFrom(hit.thumbnail_url, img);
      const link = element("a", { href: "#", textContent: hit.case_id });
      link.dataset.testid = "hit-case";
      link.onclick = (event) => { event.preventDefault(); showCase(hit.case_id); };
      const meta = element("div", {},
        link, " ", element("span", { className: "score", textContent: hit.score.toFixed(3) }),
        ` · ${hit.modality ?? "?"} · ${hit.body_region ?? "?"}`,
        element("div", { className: "report-text", textContent: hit.report }));
      return element("li", {}, img, meta);
    }));
    setStatus(`${result.hits.length} similar cases`);
  } catch (err) {
    setStatus(`search failed: ${err.message}`, true);
  }
}

function citation(text, onClick, testid) {
  const link = element("a", { href: "#", textContent: text });
  link.dataset.testid = testid;
  link.onclick = (event) => { event.preventDefault(); onClick(); };
  return link;
}

async function writeReport() {
  setStatus("writing the draft report (the first one loads the model)…");
  $("report").disabled = true;
  try {
    const result = await (await api("/v1/reports", { method: "POST", body: imageForm({ index: $("index").value }) })).json();
    state.report = result.report;
    const report = result.report;
    $("gate").textContent = `gate ${report.gate?.toFixed(2)}: ${report.gate >= 0.5 ? "leaned on the image" : "leaned on the retrieved reports"} (1 = image only, 0 = reports only)`;
    $("findings").replaceChildren(...report.findings.map((s) => {
      const cites = element("span", { className: "cite" },
        ...s.cited_case_ids.map((id) => citation(id, () => showCase(id), "cite-case")),
        ...s.concept_ids.map((id) => citation(id, () => showConcept(id), "cite-concept")));
      const item = element("li", {}, element("span", { className: `status ${s.status}`, textContent: s.status }), s.sentence, " ", cites);
      if (!s.supported) item.append(element("div", { className: "unsupported", textContent: `unsupported by the evidence: ${s.unsupported_concept_ids.join(", ")}` }));
      return item;
    }));
    $("impression").textContent = report.impression;
    $("limitations").replaceChildren(...report.limitations.map((l) => element("li", { textContent: l })));
    $("report-text").value = result.text;
    $("export-text").disabled = $("export-json").disabled = false;
    setStatus(`draft written in ${result.seconds.toFixed(1)} s`);
  } catch (err) {
    setStatus(`report failed: ${err.message}`, true);
  } finally {
    $("report").disabled = !state.file;
  }
}

function showDetail(...nodes) {
  $("detail-body").replaceChildren(...nodes);
  $("detail").hidden = false;
}

async function showCase(caseId) {
  try {
    const c = await (await api(`/v1/cases/${encodeURIComponent(caseId)}?index=${encodeURIComponent($("index").value)}`)).json();
    const images = c.images.slice(0, 4).map((i) => { const img = element("img", { alt: i.caption || i.image_id, width: 128 }); imageFrom(i.thumbnail_url, img); return img; });
    showDetail(element("h3", { textContent: `case ${c.case_id}` }), ...images, element("div", { className: "report-text", textContent: c.report_text }));
  } catch (err) {
    showDetail(element("p", { textContent: `case ${caseId}: ${err.message}` }));
  }
}

async function showConcept(conceptId) {
  try {
    const g = await (await api(`/v1/concepts/${encodeURIComponent(conceptId)}?index=${encodeURIComponent($("index").value)}`)).json();
    const names = (items) => (items || []).map((x) => x.name).join(", ") || "none";
    showDetail(element("h3", { textContent: `${g.name} (${g.concept_id})` }),
      element("p", { textContent: `is a: ${names(g.ancestors)}` }),
      element("p", { textContent: `located in: ${names(g.locations)}` }),
      element("p", { textContent: `differential: ${names(g.differential_diagnoses)}` }));
  } catch (err) {
    showDetail(element("p", { textContent: `concept ${conceptId}: ${err.message}` }));
  }
}

function download(name, type, text) {
  const link = element("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

$("api-key").value = localStorage.getItem("kgreport-api-key") || "";
$("api-key").onchange = loadIndexes;
$("image").onchange = () => {
  state.file = $("image").files[0] || null;
  $("search").disabled = $("report").disabled = !state.file;
  preview();
};
$("window").onchange = preview;
$("search").onclick = search;
$("report").onclick = writeReport;
$("detail-close").onclick = () => { $("detail").hidden = true; };
$("export-text").onclick = () => download("report.txt", "text/plain", $("report-text").value);
$("export-json").onclick = () => download("report.json", "application/json",
  JSON.stringify({ ...state.report, edited_text: $("report-text").value }, null, 2));
loadIndexes();
