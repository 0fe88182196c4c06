// regcast dashboard: reads the JSON API with the bearer token kept in this tab (sessionStorage).
"use strict";

const FINAL = new Set(["FINISHED", "FAILED", "CANCELLED"]);
const $ = (id) => document.getElementById(id);
let timer = null;

function token() { return sessionStorage.getItem("regcast-token") || ""; }

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                credentials: "same-origin" });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401) notice("The API token is missing or wrong: type it at the top of the page.", true);
  return { status: r.status, data };
}

function notice(text, bad) {
  const n = $("notice");
  n.textContent = text || "";
  n.className = bad ? "bad" : "";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

// A reason as a person would say it, the exact one kept beside it.
function plain(reason) {
  if (!reason) return "";
  const r = reason.toLowerCase();
  const rules = [
    [/401|403|unauthori|denied|credential|authenticat/, "The registry refused the credentials."],
    [/not found|404|image not found/, "The image or tag does not exist there."],
    [/certificate|tls|ssl/, "The secure connection could not be verified."],
    [/unreachable|connect|resolve|refused|timed out|timeout|did not answer/, "The registry could not be reached."],
    [/429|rate limit|too many/, "The registry is limiting requests; try later."],
    [/digest|mismatch/, "The data did not match its checksum."],
    [/cancel/, "Cancelled by a user."],
    [/5\d\d|server error/, "The registry had an internal error."],
  ];
  for (const [re, text] of rules) if (re.test(r)) return text;
  return "The copy failed.";
}

// -- jobs list --------------------------------------------------------------------------------
async function loadJobs() {
  const q = new URLSearchParams();
  for (const name of ["state", "image", "target"]) {
    const v = $("filter-form").elements[name].value.trim();
    if (v) q.set(name, v);
  }
  q.set("limit", "50");
  const { status, data } = await api("GET", "/api/distribute/image?" + q);
  const body = $("jobs");
  if (status !== 200) { body.replaceChildren(); return; }
  $("jobs-caption").textContent = `${data.jobs.length} of ${data.total} job(s), newest first`;
  body.replaceChildren(...data.jobs.map((j) => {
    const done = j.targets.filter((t) => t.state === "FINISHED" || t.state === "SKIPPED").length;
    const src = j.source || {};
    return el("tr", { "data-job": j.id },
      el("td", {}, el("a", { href: "#/jobs/" + j.id, text: j.id.slice(0, 8) })),
      el("td", {}, el("span", { class: "state " + j.value.toLowerCase(), text: j.value })),
      el("td", { text: `${src.image}:${src.ref}` }),
      el("td", { text: `${done}/${j.targets.length}` }),
      el("td", { text: when(j.started_at) }));
  }));
}

// One run in words; a push run also says how long the pushed tag took to be in sync everywhere.
function describeRun(r) {
  const text = `${r.state} (${r.copied} copied, ${r.up_to_date} up to date, ${r.failed} failed)`;
  if (r.trigger !== "push") return text;
  return r.lag_seconds == null ? `push: ${text}` : `push: ${text}, in sync ${r.lag_seconds.toFixed(1)} s after the push`;
}

// Push events this process received (GET /api/events), shown above the mirror sets once there are any.
async function loadEvents() {
  const { status, data } = await api("GET", "/api/events");
  const box = $("events-summary");
  if (status !== 200 || !data || !data.received && !data.unauthorized && !data.malformed) { box.hidden = true; return; }
  const lag = data.last_lag_seconds == null ? "" : `; last push in sync everywhere after ${data.last_lag_seconds.toFixed(1)} s`;
  box.textContent = `Push events: ${data.received} received, ${data.matched} matched, ${data.duplicate} duplicate, ` +
    `${data.ignored} ignored, ${data.unauthorized} refused${lag}.`;
  box.hidden = false;
}

// Mirror sets (GET /api/mirrors) with their last runs; the section stays hidden when there are none.
async function loadMirrors() {
  const { status, data } = await api("GET", "/api/mirrors");
  const list = status === 200 && data ? (data.mirrors || []) : [];
  $("mirrors-box").hidden = list.length === 0;
  if (list.length) loadEvents();
  const rows = await Promise.all(list.map(async (m) => {
    const name = encodeURIComponent(m.name);
    const runs = await api("GET", `/api/mirrors/${name}/runs?limit=3`);
    const last = runs.status === 200 ? (runs.data.runs || []) : [];
    const button = el("button", { type: "button", text: "Run now", "aria-label": "Run " + m.name + " now" });
    button.addEventListener("click", async () => {
      const r = await api("POST", `/api/mirrors/${name}/run`);
      notice(r.status < 300 ? `Mirror ${m.name} started.` : `Could not start ${m.name}: ${(r.data || {}).msg || r.status}`, r.status >= 300);
      loadMirrors();
    });
    const runText = last.length ? last.map(describeRun).join("; ") : "never run";
    return el("tr", { "data-mirror": m.name },
      el("td", {}, el("strong", { text: m.name }), el("br"), el("span", { class: "pct", text: `${m.source} → ${(m.targets || []).join(", ")}` })),
      el("td", { class: "runs", text: runText }),
      el("td", { text: last.length ? when(last[0].finished_at || last[0].started_at) : (m.next_due ? "next " + when(m.next_due) : "–") }),
      el("td", {}, button));
  }));
  $("mirrors").replaceChildren(...rows);
}

// -- one job ----------------------------------------------------------------------------------
async function loadJob(id) {
  const { status, data } = await api("GET", "/api/distribute/image/" + encodeURIComponent(id));
  if (status !== 200) {
    $("job-title").textContent = "Job not found";
    return true;
  }
  const j = data;
  $("job-title").textContent = "Job " + j.id;
  const src = j.source || {};
  const rows = [["State", j.value], ["Source", `${src.endpoint} ${src.image}:${src.ref}`],
    ["Digest", j.source_digest || "–"], ["Started", when(j.started_at)], ["Finished", when(j.finished_at)]];
  $("job-summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, "data-field": k.toLowerCase() })]));
  const err = $("job-error");
  err.hidden = !j.error;
  err.textContent = j.error ? `${plain(j.error)} (${j.error})` : "";
  $("cancel").hidden = FINAL.has(j.value);
  $("retry").hidden = !(j.value === "FAILED" || j.value === "CANCELLED");
  $("targets").replaceChildren(...j.targets.map((t) => {
    const pct = t.bytes_total ? Math.floor((100 * t.bytes_done) / t.bytes_total) : (t.state === "FINISHED" ? 100 : 0);
    const label = `${t.endpoint} ${t.image}:${t.ref}`;
    const bar = el("progress", { max: "100", value: String(pct), "aria-label": "Progress of " + label });
    const item = el("li", { class: "target " + t.state.toLowerCase(), "data-state": t.state },
      el("div", { class: "target-head" }, el("strong", { text: label }),
        el("span", { class: "state " + t.state.toLowerCase(), text: t.state })),
      bar,
      el("span", { class: "pct", text: `${pct} % · ${bytes(t.bytes_done)} of ${bytes(t.bytes_total)}` }));
    if (t.error) item.append(el("p", { class: "reason" }, el("strong", { text: plain(t.error) }), " ", el("span", { class: "detail", text: t.error })));
    else if (t.reason) item.append(el("p", { class: "pct", text: t.reason === "up-to-date" ? "Already up to date." : "Left alone: the tag holds another image." }));
    if (t.waiting) item.append(el("p", { class: "waiting", text: "Waiting: " + t.waiting }));
    if (t.detached) {
      const rate = t.bytes_per_second ? ` at ${bytes(t.bytes_per_second)}/s` : "";
      const n = t.detached.blobs;
      item.append(el("p", { class: "detached", text: `Going alone${rate} (${n} blob${n === 1 ? "" : "s"}): ${t.detached.reason}` }));
    }
    return item;
  }));
  const deliveries = j.notifications || [];
  $("deliveries-box").hidden = deliveries.length === 0;
  $("deliveries").replaceChildren(...deliveries.map((d) =>
    el("li", { text: `${d.event} → ${d.url}: attempt ${d.attempt}, ${d.delivered ? "delivered" : (d.error || "HTTP " + d.status)}` })));
  return FINAL.has(j.value);
}

// -- routing and refresh -------------------------------------------------------------------------
function route() {
  clearTimeout(timer);
  const m = location.hash.match(/^#\/jobs\/([0-9a-f-]+)$/);
  $("job-view").hidden = !m;
  $("list-view").hidden = !!m;
  const tick = async () => {
    let final = false;
    try {
      if (m) final = await loadJob(m[1]);
      else { await loadJobs(); await loadMirrors(); }
    } catch (e) {
      notice("regcast could not be reached; retrying.", true);
    }
    timer = setTimeout(tick, m && !final ? 1000 : 3000);
  };
  tick();
}

function currentJob() {
  const m = location.hash.match(/^#\/jobs\/([0-9a-f-]+)$/);
  return m ? m[1] : null;
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = token();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("regcast-token", $("token").value.trim());
    notice("Token saved for this tab.");
    route();
  });
  $("filter-form").addEventListener("submit", (ev) => { ev.preventDefault(); route(); });
  $("submit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target.elements;
    const auth = (user, password) => (user.value.trim() ? { basicauth: { user: user.value.trim(), password: password.value } } : undefined);
    const verify = f.verify_tls.checked;
    const targets = f.targets.value.split(/\s+/).filter(Boolean)
      .map((endpoint) => ({ endpoint, overwrite: f.overwrite.checked, verify_tls: verify, auth: auth(f.dst_user, f.dst_password) }));
    const source = { endpoint: f.endpoint.value.trim(), image: f.image.value.trim(), ref: f.ref.value.trim(),
                     verify_tls: verify, auth: auth(f.src_user, f.src_password) };
    const body = { source, targets };
    if (f.spool.value) body.spool = f.spool.value === "on";  // sent only when chosen: else the service's default
    const r = await api("POST", "/api/distribute/image", body);
    f.src_password.value = "";  // the service keeps them (encrypted); the page does not
    f.dst_password.value = "";
    if (r.status === 201) {
      notice("Copy started: job " + r.data.id);
      location.hash = "#/jobs/" + r.data.id;
    } else {
      notice("Not started: " + ((r.data || {}).msg || "HTTP " + r.status), true);
    }
  });
  $("cancel").addEventListener("click", async () => {
    const r = await api("DELETE", "/api/distribute/image/" + currentJob());
    notice(r.status < 300 ? "Cancel requested." : "Could not cancel: " + ((r.data || {}).msg || r.status), r.status >= 300);
    route();
  });
  $("retry").addEventListener("click", async () => {
    const r = await api("POST", `/api/distribute/image/${currentJob()}/retry`);
    notice(r.status < 300 ? "Failed targets queued again." : "Could not retry: " + ((r.data || {}).msg || r.status), r.status >= 300);
    route();
  });
  window.addEventListener("hashchange", () => { route(); $("main").focus(); });
  route();
});
