// The radiologist's page: upload an image, view it, find similar cases, write and edit a draft report.
// Plain DOM code against the REST API; every request carries the API key when one is entered.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, report: null, notes: null };

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
    let code = null;
    try { ({ message, code } = (await response.json()).error); } catch (_) { /* not JSON */ }
    throw Object.assign(new Error(message), { code });
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
    const usable = indexes.filter((i) => i.status === "ok");  // a broken index is listed with its reason, not offered
    $("index").replaceChildren(...usable.map((i) => element("option", { value: i.name, textContent: `${i.name} (${i.cases ?? "?"} cases)` })));
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

// A case id that opens the case, a concept id that opens the concept: the same links everywhere.
const caseLink = (id, testid) => citation(id, () => showCase(id), testid);
const conceptLink = (id, testid) => citation(id, () => showConcept(id), testid);

async function writeReport() {
  // Any text in the notes box is sent, spaces included: the server says when notes are unusable.
  const notes = $("notes").value;
  const fields = { index: $("index").value, ...(notes ? { notes } : {}) };
  setStatus(notes ? "writing the report from your notes (the first one loads the model)…" : "writing the draft report (the first one loads the model)…");
  $("notes-error").hidden = true;
  $("report").disabled = true;
  try {
    const result = await (await api("/v1/reports", { method: "POST", body: imageForm(fields) })).json();
    state.report = result.report;
    state.notes = notes || null;
    showReport(result.report);
    $("report-text").value = result.text;
    $("export-text").disabled = $("export-json").disabled = false;
    const seconds = `${result.seconds.toFixed(1)} s`;
    if (result.report.abstained) setStatus(`draft withheld after ${seconds}: no confident draft, see the similar cases`);
    else setStatus(result.report.mode === "notes" ? `draft written from your notes in ${seconds}` : `draft written in ${seconds}`);
  } catch (err) {
    setStatus(`report failed: ${err.message}`, true);
    if (err.code === "bad_notes") {
      $("notes-error").textContent = `notes: ${err.message}`;
      $("notes-error").hidden = false;
    }
  } finally {
    $("report").disabled = !state.file;
  }
}

function showReport(report) {
  const confidence = report.confidence == null ? "" : ` · confidence ${report.confidence.toFixed(2)}`;
  $("mode").textContent = `(${report.mode === "notes" ? "notes mode: from your notes" : "image mode: from similar cases"}${confidence})`;
  $("gate").textContent = report.gate == null
    ? "gate: none (no draft was written)"
    : `gate ${report.gate.toFixed(2)}: ${report.gate >= 0.5 ? "leaned on the image" : "leaned on the retrieved reports"} (1 = image only, 0 = reports only)`;
  $("abstained").hidden = !report.abstained;
  $("abstained").textContent = report.abstained ? report.impression : "";
  $("written").hidden = report.abstained;
  $("findings").replaceChildren(...(report.abstained ? [] : report.findings.map(findingItem)));
  $("no-findings").hidden = report.abstained || report.findings.length > 0;
  const cited = report.impression_items && report.impression_items.length ? ` (notes items ${report.impression_items.join(", ")})` : "";
  $("impression").textContent = report.abstained ? "" : report.impression + cited;
  $("differential").replaceChildren(...report.differential.map(differentialItem));
  const weights = Object.entries(report.differential_weights || {});
  $("differential-weights").textContent = weights.length
    ? `differential weights on this case: ${weights.map(([s, w]) => `${s} ${w.toFixed(2)}`).join(" · ")}`
    : "";
  $("limitations").replaceChildren(...report.limitations.map((l) => element("li", { textContent: l })));
  $("candidates").replaceChildren(...topCandidates(report.candidates, 3).map(candidateItem));
  $("candidates-block").hidden = report.candidates.length === 0;  // none in notes mode
  $("changes").replaceChildren(...changes(report));
}

function findingItem(s) {
  const cites = element("span", { className: "cite" },
    ...s.cited_case_ids.map((id) => caseLink(id, "cite-case")),
    ...s.concept_ids.map((id) => conceptLink(id, "cite-concept")));
  const item = element("li", {}, element("span", { className: `status ${s.status}`, textContent: s.status }), s.sentence, " ", cites);
  // Notes mode: the notes item the sentence writes out.
  if (s.notes_item != null) item.append(element("span", { className: "note", textContent: ` (notes item ${s.notes_item})` }));
  if (!s.supported) item.append(element("div", { className: "unsupported", textContent: `unsupported by the evidence: ${s.unsupported_concept_ids.join(", ")}` }));
  return item;
}

function differentialItem(d) {
  // The diagnosis's name opens its concept where the graph has one.
  const name = d.diagnosis_id
    ? citation(d.name, () => showConcept(d.diagnosis_id), "differential-diagnosis")
    : element("span", { textContent: d.name });
  const sources = element("span", { className: "cite" },
    ...d.case_ids.map((id) => caseLink(id, "differential-case")),
    ...d.concept_ids.map((id) => conceptLink(id, "differential-concept")));
  const item = element("li", {}, name, " ", element("span", { className: "score", textContent: d.score.toFixed(2) }),
    d.case_ids.length || d.concept_ids.length ? " · from " : "", sources);
  // Why the knowledge base offers it: each stated finding and the knowledge-base finding it matched.
  const supports = (d.supports || []).map((s) => `${s.stated} → ${s.kb_finding}${s.pathognomonic ? " (pathognomonic)" : ""}`);
  if (supports.length) item.append(element("div", { className: "note support", textContent: `explains: ${supports.join("; ")}` }));
  if ((d.unexplained || []).length) item.append(element("div", { className: "note", textContent: `does not explain: ${d.unexplained.join("; ")}` }));
  return item;
}

// The best `n` by score; the selected draft is always among them.
function topCandidates(candidates, n) {
  const ranked = [...candidates].sort((a, b) => b.score - a.score);
  const top = ranked.slice(0, n);
  const selected = ranked.find((c) => c.selected);
  if (selected && !top.includes(selected)) top[top.length - 1] = selected;
  return top;
}

function excerpt(text, words = 24) {
  const all = text.split(/\s+/).filter(Boolean);
  return all.slice(0, words).join(" ") + (all.length > words ? " …" : "");
}

function candidateItem(c) {
  const item = element("li", { className: c.selected ? "selected" : "" },
    caseLink(c.case_id, "candidate-case"), " ",
    element("span", { className: "score", textContent: `score ${c.score.toFixed(3)}` }),
    ` · agreement ${c.agreement.toFixed(2)}`,
    c.selected ? element("strong", { className: "mark", textContent: " ✓ selected draft" }) : "",
    element("div", { className: "report-text", textContent: excerpt(c.text) }));
  if (c.selected) item.setAttribute("aria-current", "true");
  return item;
}

// -- what the refiner changed: a word diff from the draft it edited to the report it wrote ----------------
function changes(report) {
  const nodes = [];
  if (report.draft) {
    const source = report.draft.source === "case"
      ? element("p", { className: "note" }, "edited from the report of case ", caseLink(report.draft.case_id, "draft-case"), ":")
      : element("p", { className: "note", textContent: "written from your notes (as expanded from shorthand):" });
    const written = `Findings: ${report.findings.map((s) => s.sentence).join(" ")} Impression: ${report.impression}`;
    nodes.push(source, element("p", { className: "diff" }, ...diffNodes(wordDiff(report.draft.text, written))));
  } else {
    nodes.push(element("p", { className: "note", textContent: "no draft was edited" }));
  }
  if (report.removed.length) {
    // Each entry is "sentence [why]" (generator.report.removal); an entry without a reason was unsupported.
    nodes.push(element("ul", { className: "removed" }, ...report.removed.map((entry) => {
      const match = /^([\s\S]*?)\s*\[([^\[\]]+)\]$/.exec(entry);
      const [sentence, why] = match ? [match[1], match[2]] : [entry, "unsupported"];
      return element("li", {}, element("del", { textContent: sentence }), " ", element("span", { className: "note", textContent: `removed: ${why}` }));
    })));
  }
  return nodes;
}

// [op, word] with op "=" (kept), "-" (only in `before`) or "+" (only in `after`): a longest common
// subsequence over words (quadratic, fine for reports of a few hundred words).
function wordDiff(before, after) {
  const a = before.split(/\s+/).filter(Boolean), b = after.split(/\s+/).filter(Boolean);
  const lcs = Array.from({ length: a.length + 1 }, () => new Uint16Array(b.length + 1));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const ops = [];
  let i = 0, j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) { ops.push(["=", a[i]]); i++; j++; }
    else if (lcs[i + 1][j] >= lcs[i][j + 1]) ops.push(["-", a[i++]]);
    else ops.push(["+", b[j++]]);
  }
  while (i < a.length) ops.push(["-", a[i++]]);
  while (j < b.length) ops.push(["+", b[j++]]);
  return ops;
}

// Runs of one op become one text node, <del> or <ins>.
function diffNodes(ops) {
  const nodes = [];
  let k = 0;
  while (k < ops.length) {
    const op = ops[k][0];
    const words = [];
    while (k < ops.length && ops[k][0] === op) words.push(ops[k++][1]);
    const text = words.join(" ");
    nodes.push(op === "=" ? document.createTextNode(text) : element(op === "-" ? "del" : "ins", { textContent: text }), " ");
  }
  return nodes;
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
  JSON.stringify({ ...state.report, notes: state.notes, edited_text: $("report-text").value }, null, 2));
loadIndexes();
