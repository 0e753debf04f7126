// The raftkv dashboard: redraws from /events (server-sent events, this node's /status.json every half second).
"use strict";
const WINDOW_S = 300;  // the charts show the last five minutes
const series = { t: [], applied: [], proposals: [], reads: [], fsync: [], commit: [] };
let last = null;
const charts = {};

function chart(id, title, label) {
  const el = document.createElement("div");
  document.getElementById("charts").appendChild(el);
  charts[id] = new uPlot(
    {
      title, width: 420, height: 180,
      // Always the last WINDOW_S seconds, from the first point on (uPlot would stretch one point over years).
      scales: { x: { time: true, range: (_u, _min, max) => [max - WINDOW_S, max] }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [{}, { label, stroke: "#0a5", width: 2, points: { show: false } }],
      axes: [{ values: (_u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })) }, { size: 60 }],
    },
    [[], []], el);
}

function text(x) { return x === null || x === undefined ? "—" : String(x); }

function draw(s) {
  document.getElementById("cluster").textContent = s.cluster_id;
  document.getElementById("self").textContent = s.id;
  const leader = s.leader === null ? "none known" : `node ${s.leader}`;
  document.getElementById("summary").textContent =
    `served by node ${s.id} (${s.role}), term ${s.term}, leader: ${leader}, commit ${s.commit}, applied ${s.applied}` +
    (s.store.revision === undefined ? "" :
      `; store at revision ${s.store.revision} (compacted at ${s.store.compact_revision}), ${s.store.leases} leases held`);
  const body = document.querySelector("#members tbody");
  body.replaceChildren(...s.members.map((m) => {
    const tr = document.createElement("tr");
    const role = m.leader ? "leader" : (m.learner ? "learner" : "follower");
    tr.dataset.member = m.id;
    tr.dataset.role = role;
    tr.dataset.reachable = String(m.reachable);
    for (const [cls, v] of [["id", m.id], ["role", role], ["kind", m.learner ? "learner" : "voter"],
                            ["reachable", m.reachable ? "yes" : "unreachable"], ["peer", m.peer_address],
                            ["client", m.client_address], ["lag", m.lag]]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text(v);
      tr.appendChild(td);
    }
    return tr;
  }));
  const tl = document.getElementById("timeline");
  tl.replaceChildren(...s.history.slice().reverse().map((e) => {
    const div = document.createElement("div");
    const when = new Date(e.time * 1000).toLocaleTimeString();
    div.textContent = e.kind === "members"
      ? `${when}  members: voters ${e.voters.join(", ")}${e.learners.length ? "; learners " + e.learners.join(", ") : ""}`
      : `${when}  term ${e.term}: node ${s.id} is ${e.role}; leader ${e.leader === null ? "none" : "node " + e.leader}`;
    return div;
  }));
  // Rates per second, from the counters' differences between two messages.
  if (last !== null && s.time > last.time) {
    const dt = s.time - last.time, c = s.counters, p = last.counters;
    const fsyncs = c.fsyncs - p.fsyncs, commits = c.commits - p.commits;
    series.t.push(s.time);
    series.applied.push((c.applied - p.applied) / dt);
    series.proposals.push((c.proposals - p.proposals) / dt);
    series.reads.push((c.reads - p.reads) / dt);
    series.fsync.push(fsyncs > 0 ? 1000 * (c.fsync_seconds - p.fsync_seconds) / fsyncs : null);
    series.commit.push(commits > 0 ? 1000 * (c.commit_seconds - p.commit_seconds) / commits : null);
    while (series.t.length && series.t[0] < s.time - WINDOW_S) {
      for (const k of Object.keys(series)) series[k].shift();
    }
    charts.applied.setData([series.t, series.applied]);
    charts.proposals.setData([series.t, series.proposals]);
    charts.reads.setData([series.t, series.reads]);
    charts.fsync.setData([series.t, series.fsync]);
    charts.commit.setData([series.t, series.commit]);
  }
  last = s;
}

chart("applied", "entries applied / s (writes, all nodes)", "entries/s");
chart("proposals", "proposals / s (on the leader)", "proposals/s");
chart("reads", "linearizable reads / s (asked of this node)", "reads/s");
chart("fsync", "fsync latency, mean (ms)", "ms");
chart("commit", "commit latency on the leader, proposal to applied, mean (ms)", "ms");
const events = new EventSource("/events");
events.onmessage = (m) => draw(JSON.parse(m.data));
events.onerror = () => { document.getElementById("summary").classList.add("stale"); };
events.onopen = () => { document.getElementById("summary").classList.remove("stale"); };

// The key browser: /kv/keys on this node (served by the key-value store), with Basic credentials if given.
async function browse(ev) {
  if (ev) ev.preventDefault();
  const prefix = document.getElementById("prefix").value;
  const user = document.getElementById("user").value, password = document.getElementById("password").value;
  const headers = user ? { Authorization: "Basic " + btoa(`${user}:${password}`) } : {};
  const status = document.getElementById("keys-status");
  const r = await fetch(`/kv/keys?prefix=${encodeURIComponent(prefix)}`, { headers });
  const body = await r.json();
  const tbody = document.querySelector("#keys tbody");
  if (!r.ok) {
    status.textContent = `refused (${r.status}): ${body.error}`;
    tbody.replaceChildren();
    return;
  }
  status.textContent = `at revision ${body.revision}${body.more ? "; more keys than shown" : ""}`;
  tbody.replaceChildren(...body.kvs.map((kv) => {
    const tr = document.createElement("tr");
    for (const v of [kv.key, kv.value + (kv.truncated ? " …" : ""), kv.version, kv.mod_revision, kv.lease || "—"]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    return tr;
  }));
}
document.getElementById("browse").addEventListener("submit", browse);
