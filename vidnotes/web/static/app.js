// The vidnotes page: the jobs list (#/) and a job's notes and transcript (#/job/<id>).
// Everything from the server is shown with textContent, never parsed as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const HEADERS = { "X-Requested-With": "vidnotes" };
let listTimer = null;
let jobTimer = null;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function say(node, text, kind) {
  node.textContent = text;
  node.className = "message " + (kind || "");
}

// -- the jobs list -------------------------------------------------------------------------
function upload(event) {
  event.preventDefault();
  const file = $("#file").files[0];
  const message = $("#upload-message");
  if (!file) { say(message, "Choose a video or audio file first.", "error"); return; }
  const params = new URLSearchParams({ name: file.name, speakers: $("#speakers").value, language: $("#language").value.trim() });
  const xhr = new XMLHttpRequest();
  const bar = $("#upload-progress");
  bar.hidden = false; bar.value = 0;
  $("#upload-button").disabled = true;
  say(message, `Uploading ${file.name} ...`, "");
  xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total); });
  xhr.addEventListener("loadend", () => {
    $("#upload-button").disabled = false;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
    if (xhr.status === 201) {
      bar.value = 100;
      say(message, `Uploaded ${body.name}: Airflow picks it up from the inbox; its stages show below.`, "ok");
      $("#upload-form").reset();
      refreshJobs();
    } else {
      bar.hidden = true;
      say(message, (body && body.error) || `The upload failed (${xhr.status || "no answer from the server"}).`, "error");
    }
  });
  xhr.open("POST", "/api/uploads?" + params.toString());
  xhr.setRequestHeader("X-Requested-With", "vidnotes");
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.send(file);
}

function stageChips(stages) {
  const box = el("span", { class: "stages" });
  for (const s of stages) {
    box.append(el("span", { class: `chip ${s.state}`, title: `${s.stage}: ${s.state}`, text: s.stage.replace("_", " ") + (s.detail ? ` ${s.detail}` : "") + (s.state === "off" ? " off" : "") }));
  }
  return box;
}

async function refreshJobs() {
  let data;
  try { data = await api("/api/jobs"); } catch (e) { $("#jobs-note").textContent = `The list could not be loaded: ${e.message}`; return; }
  $("#jobs-note").textContent = data.airflow || "";
  const body = $("#jobs tbody");
  body.replaceChildren();
  if (!data.jobs.length) body.append(el("tr", {}, el("td", { colspan: "5", class: "note", text: "No uploads yet." })));
  for (const j of data.jobs) {
    const state = el("td", {}, el("span", { class: `state ${j.state}`, text: j.state }));
    if (j.error) state.append(el("div", { class: "error-text", text: j.error }));
    const open = el("td");
    if (j.job_id && (j.notes || j.state === "failed")) open.append(el("a", { href: `#/job/${j.job_id}`, text: j.notes ? "Read the notes" : "Details" }));
    const row = el("tr", { "data-key": j.key, "data-state": j.state },
      el("td", { class: "name", text: j.name }), el("td", { text: new Date(j.uploaded).toLocaleString() }),
      state, el("td", {}, stageChips(j.stages)), open);
    body.append(row);
  }
}

// -- one job -------------------------------------------------------------------------------
function player() { return $("#player"); }

function seek(seconds) {
  const p = player();
  if (!p) return;
  p.currentTime = seconds;
  highlight(seconds);
}

function highlight(t) {
  let current = null;
  for (const li of document.querySelectorAll("#transcript li")) {
    const on = t >= Number(li.dataset.start) && t < Number(li.dataset.end);
    li.classList.toggle("current", on);
    if (on) current = li;
  }
  return current;
}

function transcriptLine(jobId, seg) {
  const text = el("span", { class: "text", text: seg.text });
  const li = el("li", { "data-start": String(seg.start), "data-end": String(seg.end), "data-index": String(seg.index) });
  const time = el("button", { class: "time", type: "button", title: "play from here", text: clock(seg.start), onclick: () => seek(seg.start) });
  text.addEventListener("click", () => seek(seg.start));
  const edit = el("button", { class: "edit", type: "button", title: "correct this line", text: "Correct" });
  edit.addEventListener("click", (e) => { e.stopPropagation(); editLine(jobId, li, seg); });
  li.append(time);
  if (seg.speaker) li.append(el("span", { class: "speaker", text: seg.speaker + ": " }));
  li.append(text);
  if (seg.corrected) li.append(el("span", { class: "badge", title: `was: ${seg.original}`, text: "corrected" }));
  li.append(edit);
  return li;
}

function editLine(jobId, li, seg) {
  if (li.querySelector("textarea")) return;
  const box = el("textarea", { class: "correction", maxlength: "1000", rows: "2" });
  box.value = li.querySelector(".text").textContent;
  const status = el("span", { class: "message" });
  const save = el("button", { type: "button", class: "save", text: "Save" });
  const cancel = el("button", { type: "button", class: "cancel", text: "Cancel" });
  const form = el("div", { class: "edit-box" }, box, save, cancel, status);
  cancel.addEventListener("click", () => form.remove());
  save.addEventListener("click", async () => {
    save.disabled = true;
    try {
      const c = await api(`/api/jobs/${jobId}/corrections`, {
        method: "POST", headers: { ...HEADERS, "Content-Type": "application/json" },
        body: JSON.stringify({ segment: seg.index, text: box.value }),
      });
      const fresh = transcriptLine(jobId, { ...seg, text: c.corrected, corrected: true, original: c.original });
      li.replaceWith(fresh);
    } catch (e) {
      save.disabled = false;
      say(status, e.message, "error");
    }
  });
  li.append(form);
  box.focus();
}

function section(title, ...children) { return el("section", { class: "card" }, el("h2", { text: title }), ...children); }

function timeLink(seconds, label) {
  return el("a", { href: "#", class: "seek", onclick: (e) => { e.preventDefault(); seek(seconds); }, text: label || clock(seconds) });
}

function renderNotes(job) {
  const box = $("#notes");
  box.replaceChildren();
  const n = job.notes;
  if (!n) { box.append(el("p", { class: "note", text: "The notes are not ready yet." })); return; }
  const summary = el("div", { class: "summary" });
  for (const s of n.summary_sentences || []) summary.append(el("p", {}, timeLink(s.start), " ", el("span", { text: s.text })));
  if (!(n.summary_sentences || []).length) summary.append(el("p", { text: n.summary || "" }));
  const flagText = el("input", { id: "flag-comment", maxlength: "1000", placeholder: "What is wrong with the summary?" });
  const flagStatus = el("span", { class: "message" });
  const flag = el("button", { type: "button", id: "flag-button", text: "Flag" });
  flag.addEventListener("click", async () => {
    try {
      await api(`/api/jobs/${job.job_id}/flags`, { method: "POST", headers: { ...HEADERS, "Content-Type": "application/json" },
        body: JSON.stringify({ sentence: "", comment: flagText.value }) });
      flagText.value = "";
      say(flagStatus, "Thank you: the flag is stored with the job.", "ok");
    } catch (e) { say(flagStatus, e.message, "error"); }
  });
  box.append(section("Summary", summary, el("div", { class: "flag" }, flagText, flag, flagStatus)));
  const chapters = el("ol", { class: "chapters" });
  for (const c of n.chapters || []) {
    const points = el("ul");
    (c.key_points || []).forEach((p, i) => points.append(el("li", {}, timeLink((c.key_point_starts || [])[i] ?? c.start), " ", el("span", { text: p }))));
    const speakers = [...new Set((c.paragraphs || []).map((p) => p.speaker).filter(Boolean))];
    const head = el("h3", {}, timeLink(c.start, `${clock(c.start)}–${clock(c.end)}`), " ", el("span", { text: c.title }));
    chapters.append(el("li", {}, head, speakers.length ? el("p", { class: "note", text: "Speakers: " + speakers.join(", ") }) : "", points));
  }
  box.append(section("Chapters", chapters));
  const terms = el("ul", { class: "terms" });
  for (const t of n.key_terms || []) terms.append(el("li", {}, timeLink(t.first, t.term), el("span", { class: "note", text: ` ×${t.count}` })));
  box.append(section("Key terms", terms));
  const voices = [...new Set(job.segments.map((s) => s.speaker).filter(Boolean))];
  if (voices.length) {
    const list = el("ul");
    for (const v of voices) {
      const spoken = job.segments.filter((s) => s.speaker === v).reduce((a, s) => a + (s.end - s.start), 0);
      list.append(el("li", { text: `${v}: ${clock(spoken)} spoken` }));
    }
    box.append(section("Speakers", list));
  }
}

async function showJob(jobId) {
  clearInterval(jobTimer);
  let job;
  try { job = await api(`/api/jobs/${encodeURIComponent(jobId)}`); } catch (e) {
    $("#job-title").textContent = "Job " + jobId;
    say($("#job-state"), e.message, "error");
    ["#notes", "#transcript", "#player-box", "#downloads"].forEach((s) => $(s).replaceChildren());
    return;
  }
  $("#job-title").textContent = job.name;
  const n = job.notes || {};
  const meta = [n.duration ? clock(n.duration) : "", n.language ? `language ${n.language}` : "",
    n.summarizer ? `${n.summarizer} summary` : "", n.speech_model || ""].filter(Boolean);
  $("#job-meta").textContent = meta.join(" · ");
  const st = job.status || {};
  if (st.state === "failed") say($("#job-state"), `Failed in ${st.stage}: ${(st.error || {}).message || "see Airflow"}`, "error");
  else if (st.state === "succeeded") say($("#job-state"), "", "");
  else say($("#job-state"), `Running: ${st.stage || "waiting"} ...`, "");
  const box = $("#player-box");
  box.replaceChildren();
  if (job.media.available) {
    const media = el(job.media.kind === "video" ? "video" : "audio", { id: "player", controls: "", preload: "metadata" });
    media.append(el("source", { src: `/api/jobs/${job.job_id}/media`, type: job.media.type }));
    media.addEventListener("timeupdate", () => {
      const li = highlight(media.currentTime);
      if (li && !media.paused) li.scrollIntoView({ block: "nearest" });
    });
    box.append(media);
  }
  const list = $("#transcript");
  list.replaceChildren(...job.segments.map((s) => transcriptLine(job.job_id, s)));
  const dl = $("#downloads");
  dl.replaceChildren(...job.downloads.map((d) => el("a", { class: "download", href: d.url, text: d.label, "data-name": d.name })));
  renderNotes(job);
  if (st.state !== "succeeded" && st.state !== "failed") jobTimer = setTimeout(() => route(), 3000);
}

function route() {
  clearInterval(listTimer);
  clearTimeout(jobTimer);
  const m = location.hash.match(/^#\/job\/([0-9a-f]{16})$/);
  $("#list-view").hidden = !!m;
  $("#job-view").hidden = !m;
  if (m) { showJob(m[1]); return; }
  refreshJobs();
  listTimer = setInterval(refreshJobs, 2000);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#upload-form").addEventListener("submit", upload);
  route();
});
