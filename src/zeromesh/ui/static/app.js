// zeromesh dashboard: polls /api/state and draws it. Nothing is computed here but text and
// positions; the server's pure model (zeromesh.ui.state) decides everything shown.
// Every text goes through textContent (never innerHTML): names come from user manifests.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const SVGNS = "http://www.w3.org/2000/svg";
const COL_W = 250, ROW_H = 115, PAD_X = 70, PAD_Y = 50, R = 22;

let state = null;
let page = "graph";
let selected = null;      // graph node id
let selectedTrace = null;
let nsFilter = "";
let lastOk = 0;

// ---- small DOM helpers ----------------------------------------------------------------
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
}

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "text") e.textContent = v;
    else e.setAttribute(k, String(v));
  }
  for (const kid of kids.flat()) if (kid) e.append(kid);
  return e;
}

function tag(text, kind) { return el("span", {class: "tag " + (kind || ""), text}); }

function fmtNum(v) {
  if (v === null || v === undefined) return "–";
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  if (Math.abs(v) >= 0.01) return v.toFixed(2);
  return "<0.01";
}

function fmtBytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v.toFixed(0)) + " " + units[i];
}

function fmtPct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0) + "%"; }

function fmtDuration(s) {
  if (s === null || s === undefined) return "–";
  const neg = s < 0; s = Math.abs(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  const txt = d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m` : `${Math.floor(s)}s`;
  return neg ? `${txt} ago` : `in ${txt}`;
}

function table(columns, rows, opts) {
  opts = opts || {};
  if (!rows.length) return el("p", {class: "empty", text: opts.empty || "none"});
  const head = el("tr", {}, columns.map(c => el("th", {text: c[0]})));
  const body = rows.map(r => {
    const tr = el("tr", {class: opts.onclick ? "clickable" : "", "data-key": opts.key ? opts.key(r) : null},
      columns.map(c => { const v = c[1](r); return el("td", {}, v instanceof Node || Array.isArray(v) ? v : String(v ?? "")); }));
    if (opts.onclick) tr.addEventListener("click", () => opts.onclick(r));
    if (opts.selected && opts.selected(r)) tr.classList.add("selected");
    return tr;
  });
  return el("table", {class: opts.class || ""}, el("thead", {}, head), el("tbody", {}, body));
}

function replace(id, ...kids) { const box = document.getElementById(id); box.replaceChildren(...kids); }

function inNs(ns) { return !nsFilter || ns === nsFilter; }

// ---- polling ------------------------------------------------------------------------------
async function refresh() {
  let delay = 2000;
  try {
    const r = await fetch("/api/state", {headers: {"X-Zeromesh-Token": TOKEN}, cache: "no-store"});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
    state = body;
    delay = (state.interval || 2) * 1000;
    lastOk = Date.now();
    render();
    banner(state.error || "");
  } catch (e) {
    banner("dashboard server not answering: " + e.message);
  }
  const st = document.getElementById("status");
  st.textContent = lastOk ? "updated " + new Date(lastOk).toLocaleTimeString() : "no data";
  st.classList.toggle("stale", Date.now() - lastOk > 3 * delay);
  setTimeout(refresh, delay);
}

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text;
}

function render() {
  document.getElementById("cluster").textContent = "cluster " + state.cluster;
  fillNamespaces();
  renderGraph();
  renderWorkloads();
  renderServices();
  renderWaypoints();
  renderPolicies();
  renderCertificates();
  renderTraces();
  renderSources();
  renderDetail();
}

function fillNamespaces() {
  const sel = document.getElementById("ns-filter");
  const names = [...new Set((state.graph.nodes || []).map(n => n.namespace).filter(Boolean))].sort();
  const have = [...sel.options].map(o => o.value).slice(1);
  if (JSON.stringify(have) === JSON.stringify(names)) return;
  sel.replaceChildren(el("option", {value: "", text: "all"}), ...names.map(n => el("option", {value: n, text: n})));
  sel.value = names.includes(nsFilter) ? nsFilter : "";
  nsFilter = sel.value;
}

// ---- graph --------------------------------------------------------------------------------
function nodeShape(n) {
  const cls = "shape " + (n.kind === "workload" ? (n.enrolled ? "enrolled" : "") : n.kind);
  switch (n.kind) {
    case "service": return svg("polygon", {class: cls, points: `0,${-R} ${R},${R * 0.75} ${-R},${R * 0.75}`});
    case "waypoint": {
      const p = [0, 1, 2, 3, 4, 5].map(i => { const a = Math.PI / 3 * i; return `${(R * Math.cos(a)).toFixed(1)},${(R * Math.sin(a)).toFixed(1)}`; });
      return svg("polygon", {class: cls, points: p.join(" ")});
    }
    case "gateway": return svg("rect", {class: cls, x: -R, y: -R, width: 2 * R, height: 2 * R, rx: 6});
    case "unknown": return svg("circle", {class: cls, r: R});
    default: return svg("circle", {class: cls, r: R});
  }
}

function lockIcon(x, y) {
  return svg("g", {class: "lock", transform: `translate(${x},${y})`, "data-mtls": "true"},
    svg("title", {text: "mutual TLS"}),
    svg("path", {d: "M-3.5,-1 v-3 a3.5,3.5 0 0 1 7,0 v3"}),
    svg("rect", {x: -5, y: -1, width: 10, height: 8, rx: 1.5}));
}

function edgeClass(e) {
  if (e.protocol === "endpoint") return "endpoint";
  if (e.security === "mutual_tls") return "mtls";
  if (e.security === "unknown") return "unknown";
  return "plain";
}

function edgeLabel(e) {
  // rates when there were two scrapes and something moved; totals otherwise (an idle edge
  // still says what went over it since its proxies started)
  if (e.protocol === "http") {
    const busy = e.request_rate !== null && e.request_rate > 0;
    const head = busy ? `${fmtNum(e.request_rate)} rps` : `${fmtNum(e.requests)} req`;
    const err = busy ? ` · ${fmtPct(e.error_rate)} 5xx` : e.errors ? ` · ${fmtNum(e.errors)} 5xx` : "";
    const c4 = busy ? (e.client_error_rate ? ` · ${fmtPct(e.client_error_rate)} 4xx` : "")
      : e.client_errors ? ` · ${fmtNum(e.client_errors)} 4xx` : "";
    return {text: `HTTP ${head}${err}${c4}`, bad: busy ? e.error_rate > 0 : e.errors > 0};
  }
  if (e.protocol === "tcp") {
    const busy = e.byte_rate !== null && e.byte_rate > 0;
    const head = `${fmtNum(e.connections)} conn · ${fmtBytes(e.bytes)}`;
    return {text: `TCP ${head}` + (busy ? ` · ${fmtBytes(e.byte_rate)}/s` : ""), bad: e.failed > 0};
  }
  return {text: "", bad: false};
}

function visibleGraph() {
  const nodes = new Map(state.graph.nodes.map(n => [n.id, n]));
  if (!nsFilter) return {nodes: state.graph.nodes, edges: state.graph.edges};
  const keep = new Set(state.graph.nodes.filter(n => n.namespace === nsFilter).map(n => n.id));
  for (const e of state.graph.edges) {
    if (e.protocol === "endpoint") continue;
    if (keep.has(e.source)) keep.add(e.target);
    if (keep.has(e.target)) keep.add(e.source);
  }
  return {nodes: [...keep].map(id => nodes.get(id)).filter(Boolean),
          edges: state.graph.edges.filter(e => keep.has(e.source) && keep.has(e.target))};
}

let graphSig = "";

function renderGraph() {
  const root = document.getElementById("graph");
  const sig = JSON.stringify([state.graph, nsFilter, selected]);
  if (sig === graphSig) return;     // unchanged: keep the elements (and any focus) as they are
  graphSig = sig;
  const {nodes, edges} = visibleGraph();
  document.getElementById("graph-empty").hidden = nodes.length > 0;
  const w = state.graph.window;
  document.getElementById("window").textContent = w ? `rates over the last ${w.toFixed(1)} s` : "rates: waiting for a second scrape";
  // compact the columns and rows that are in view
  const cols = [...new Set(nodes.map(n => n.column))].sort((a, b) => a - b);
  const rowsOf = new Map();
  const pos = new Map();
  for (const n of [...nodes].sort((a, b) => a.row - b.row || a.id.localeCompare(b.id))) {
    const c = cols.indexOf(n.column);
    const r = rowsOf.get(c) || 0;
    rowsOf.set(c, r + 1);
    pos.set(n.id, {x: PAD_X + c * COL_W, y: PAD_Y + r * ROW_H});
  }
  const width = PAD_X * 2 + Math.max(cols.length - 1, 0) * COL_W + 60;
  const height = PAD_Y * 2 + Math.max(0, ...rowsOf.values()) * ROW_H;
  root.setAttribute("width", width);
  root.setAttribute("height", Math.max(height, 200));
  root.setAttribute("viewBox", `0 0 ${width} ${Math.max(height, 200)}`);

  const defs = svg("defs", {}, ...["mtls", "plain", "unknown", "endpoint"].map(k =>
    svg("marker", {id: "arrow-" + k, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 10, markerHeight: 10,
      markerUnits: "userSpaceOnUse", orient: "auto-start-reverse"},
      svg("path", {d: "M0,0 L10,5 L0,10 z", class: "arrowhead " + k}))));
  const edgeLayer = svg("g", {class: "edges"});
  const nodeLayer = svg("g", {class: "nodes"});
  const pairCount = new Map();
  // boxes labels must not cover: every node with its name, then each label placed
  const boxes = [...pos.values()].map(p => ({x0: p.x - 60, x1: p.x + 60, y0: p.y - R - 2, y1: p.y + R + 32}));
  const centres = [...pos.values()];
  // traffic first, so its labels get the best places; endpoint edges have none
  const ordered = [...edges].sort((x, y) => (x.protocol === "endpoint") - (y.protocol === "endpoint"));
  for (const e of ordered) {
    const a = pos.get(e.source), b = pos.get(e.target);
    if (!a || !b) continue;
    const pair = [e.source, e.target].sort().join("|");
    const k = pairCount.get(pair) || 0;
    pairCount.set(pair, k + 1);
    const g = drawEdge(e, a, b, k, boxes, centres);
    if (g) edgeLayer.append(g);
  }
  for (const n of nodes) nodeLayer.append(drawNode(n, pos.get(n.id)));
  root.replaceChildren(defs, edgeLayer, nodeLayer);
}

function quad(s, m, e, t) {
  const u = 1 - t;
  return [u * u * s[0] + 2 * u * t * m[0] + t * t * e[0], u * u * s[1] + 2 * u * t * m[1] + t * t * e[1]];
}

function overlaps(b, boxes) {
  return boxes.some(o => b.x0 < o.x1 && o.x0 < b.x1 && b.y0 < o.y1 && o.y0 < b.y1);
}

function drawEdge(e, a, b, k, boxes, centres) {
  const cls = edgeClass(e);
  const dx = b.x - a.x, dy = b.y - a.y;
  const len = Math.hypot(dx, dy);
  if (len < 1) return null;
  const ux = dx / len, uy = dy / len;
  const S = [a.x + ux * (R + 2), a.y + uy * (R + 2)];
  const E = [b.x - ux * (R + 6), b.y - uy * (R + 6)];
  // parallel edges (both directions, tcp + http) bow apart; an edge that skips columns bows
  // further, to the side where it passes farther from the nodes between its ends
  const span = Math.max(1, Math.round(Math.abs(dx) / COL_W));
  let side = (k % 2 ? -1 : 1) * (e.source < e.target ? 1 : -1);
  const size = 20 + 14 * Math.floor(k / 2) + 45 * (span - 1);
  const ctrl = sd => [(S[0] + E[0]) / 2 - uy * sd * size, (S[1] + E[1]) / 2 + ux * sd * size];
  if (span > 1 && k === 0) {
    const clearance = sd => Math.min(...[0.3, 0.5, 0.7].map(t => quad(S, ctrl(sd), E, t)).flatMap(pt =>
      centres.filter(c => c !== a && c !== b).map(c => Math.hypot(c.x - pt[0], c.y - pt[1]))), 1e9);
    if (clearance(-side) > clearance(side)) side = -side;
  }
  const M = e.protocol === "endpoint" ? [(S[0] + E[0]) / 2, (S[1] + E[1]) / 2] : ctrl(side);
  const path = svg("path", {class: "edge-line " + cls, d: `M${S[0].toFixed(1)},${S[1].toFixed(1)} Q${M[0].toFixed(1)},${M[1].toFixed(1)} ${E[0].toFixed(1)},${E[1].toFixed(1)}`,
    "marker-end": `url(#arrow-${cls})`});
  const idle = e.protocol !== "endpoint" && ((e.protocol === "http" ? e.request_rate : e.connection_rate) === 0);
  const g = svg("g", {class: "edge" + (idle ? " idle" : "") + (selected && (e.source === selected || e.target === selected) ? " selected" : ""),
    "data-id": e.id, "data-source": e.source, "data-target": e.target, "data-protocol": e.protocol,
    "data-mtls": String(!!e.mtls), "data-security": e.security || ""},
    svg("title", {text: edgeTitle(e)}), path);
  if (e.protocol !== "endpoint") {
    const lbl = edgeLabel(e);
    const w = lbl.text.length * 5.9 + (e.mtls ? 16 : 0);
    // the middle of the curve if free, else the free point nearest to it
    let at = null;
    for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78]) {
      const [x, y0] = quad(S, M, E, t);
      const y = y0 - 8;                      // just above the line, not struck through
      const box = {x0: x - w / 2, x1: x + w / 2, y0: y - 9, y1: y + 7};
      if (!overlaps(box, boxes)) { at = [x, y, box]; break; }
    }
    if (!at) { const [x, y] = quad(S, M, E, 0.5); at = [x, y - 8, {x0: x - w / 2, x1: x + w / 2, y0: y - 17, y1: y - 1}]; }
    const [lx, ly, box] = at;
    boxes.push(box);
    const lg = svg("g", {class: "edge-label"},
      svg("text", {x: lx + (e.mtls ? 8 : 0), y: ly + 4, "text-anchor": "middle", class: lbl.bad ? "err" : "", text: lbl.text}));
    if (e.mtls) lg.append(lockIcon(lx - w / 2 + 6, ly));
    g.append(lg);
  }
  return g;
}

function edgeTitle(e) {
  if (e.protocol === "endpoint") return `${e.source.slice(4)} selects ${e.target.slice(3)}`;
  const sec = {mutual_tls: "mutual TLS", none: "plaintext", partial: "partly mutual TLS", unknown: "security unknown"}[e.security] || e.security;
  const lines = [`${e.source} → ${e.target} (${e.protocol.toUpperCase()}, ${sec}, reported by ${e.reporter})`];
  if (e.services.length) lines.push("to service " + e.services.join(", "));
  if (e.protocol === "http") lines.push(`${fmtNum(e.requests)} requests (${fmtNum(e.errors)} 5xx, ${fmtNum(e.client_errors)} 4xx) in total; `
    + `now ${fmtNum(e.request_rate)} rps, ${fmtPct(e.error_rate)} 5xx, ${fmtPct(e.client_error_rate)} 4xx`);
  else lines.push(`${fmtNum(e.connections)} connections (${fmtNum(e.failed)} failed), ${fmtBytes(e.bytes)} in total; ${fmtNum(e.connection_rate)} conn/s, ${fmtBytes(e.byte_rate)}/s now`);
  return lines.join("\n");
}

function drawNode(n, p) {
  const label = n.kind === "unknown" ? "unknown" : n.name;
  const g = svg("g", {class: "node kind-" + n.kind + (n.id === selected ? " selected" : ""), transform: `translate(${p.x},${p.y})`,
    "data-id": n.id, "data-kind": n.kind, "data-enrolled": n.enrolled === null ? "" : String(n.enrolled), tabindex: 0,
    role: "button", "aria-label": `${n.kind} ${n.namespace}/${n.name}`},
    svg("title", {text: `${n.kind} ${n.namespace ? n.namespace + "/" : ""}${n.name}` + (n.pods ? ` (${n.pods} pod${n.pods > 1 ? "s" : ""})` : "")
      + (n.enrolled === true ? ", ambient (HBONE)" : n.enrolled === false ? ", not enrolled" : "")}),
    nodeShape(n),
    svg("text", {y: R + 15, class: "name", text: label.length > 28 ? label.slice(0, 27) + "…" : label}),
    svg("text", {y: R + 28, class: "ns", text: n.namespace}));
  g.addEventListener("click", () => select(n.id));
  g.addEventListener("keydown", ev => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(n.id); } });
  return g;
}

function select(id) {
  selected = id;
  document.querySelectorAll("g.node").forEach(g => g.classList.toggle("selected", g.dataset.id === id));
  document.querySelectorAll("g.edge").forEach(g => g.classList.toggle("selected", g.dataset.source === id || g.dataset.target === id));
  renderDetail();
  if (page !== "graph") renderPage(page);
}

// ---- detail panel -------------------------------------------------------------------------
function kv(k, ...v) { return el("div", {class: "kv"}, el("strong", {text: k + ": "}), ...v); }

function renderDetail() {
  const aside = document.getElementById("detail");
  if (!selected || !state) { aside.hidden = true; return; }
  const node = state.graph.nodes.find(n => n.id === selected);
  const d = state.details[selected];
  const svc = state.services.find(s => s.node_id === selected);
  const body = [];
  if (d) {
    body.push(el("h3", {}, `${d.kind} ${d.namespace}/${d.name}`));
    body.push(kv("Enrolled", d.enrolled ? tag("ambient (HBONE)", "ok") : tag("not enrolled (TCP)", "warn")));
    body.push(el("h4", {text: "Identity"}));
    body.push(d.identities.length ? el("ul", {class: "identity"}, d.identities.map(i => el("li", {class: "mono", text: i})))
      : el("p", {class: "empty identity", text: "no mesh identity (not enrolled)"}));
    body.push(kv("Pods", d.pods.join(", ")));
    if (d.mtls_modes.length) body.push(kv("Peer authentication", d.mtls_modes.join(", ")));
    body.push(kv("Waypoint", d.waypoints.length ? d.waypoints.join(", ") : "none"));
    if (d.services.length) body.push(kv("Services", d.services.map(s => s.slice(4)).join(", ")));
    body.push(el("h4", {text: "Policies in force"}));
    body.push(d.policies.length ? el("ul", {class: "policies"}, d.policies.map(p => el("li", {"data-policy": p.policy},
        tag(p.action, p.action.toLowerCase()), " ", el("strong", {text: p.policy}),
        ` — ${p.enforced_by}` + (p.via ? ` (${p.via})` : "") + `, ${p.rules} rule${p.rules === 1 ? "" : "s"}` + (p.dry_run ? ", dry-run" : ""),
        p.notes.length ? el("div", {class: "empty", text: p.notes.join(" ")}) : null)))
      : el("p", {class: "empty policies", text: d.enrolled ? "none: every connection is allowed" : "none (nothing enforces policies for a workload outside the mesh)"}));
    body.push(el("h4", {text: "Connections"}));
    const edges = new Map(state.graph.edges.map(e => [e.id, e]));
    const conn = [...d.outbound.map(id => ["→", edges.get(id), "target"]), ...d.inbound.map(id => ["←", edges.get(id), "source"])]
      .filter(c => c[1]);
    body.push(conn.length ? el("ul", {class: "connections"}, conn.map(([arrow, e, end]) =>
      el("li", {}, `${arrow} ${e[end]} `, e.mtls ? tag("mTLS", "ok") : tag(e.security || "?", "warn"), " ", edgeLabel(e).text)))
      : el("p", {class: "empty", text: "no traffic seen"}));
  } else if (svc) {
    body.push(el("h3", {}, `service ${svc.namespace}/${svc.name}`));
    body.push(kv("Hostname", el("span", {class: "mono", text: svc.hostname})));
    body.push(kv("VIP", svc.vip || "none"));
    body.push(kv("Ports", svc.ports.join(", ")));
    body.push(kv("Waypoint", svc.waypoint || "none"));
    body.push(el("h4", {text: "Endpoints"}));
    body.push(svc.endpoints.length ? el("ul", {}, svc.endpoints.map(e => el("li", {}, `${e.pod || "?"} ${e.ip} `, e.ready ? tag("ready", "ok") : tag("not ready", "warn"))))
      : el("p", {class: "empty", text: "no endpoints"}));
  } else if (node) {
    body.push(el("h3", {}, node.kind === "unknown" ? "unknown peer" : `${node.kind} ${node.namespace}/${node.name}`));
    body.push(el("p", {class: "empty", text: node.kind === "unknown" ? "Traffic from or to something outside the mesh (no workload identity)." : "Seen in metrics only: no such workload in the mesh model now."}));
  } else {
    selected = null; aside.hidden = true; return;
  }
  replace("detail-body", ...body);
  aside.hidden = false;
}

// ---- pages --------------------------------------------------------------------------------
const sel = r => r.node_id === selected;
const pick = r => select(r.node_id);

function renderWorkloads() {
  const rows = state.workloads.filter(r => inNs(r.namespace));
  replace("workloads", table([
    ["Namespace", r => r.namespace], ["Pod", r => r.pod], ["Workload", r => r.workload], ["Node", r => r.node],
    ["IP", r => r.ip], ["Identity", r => el("span", {class: "mono", text: r.identity || "–"})],
    ["Enrolled", r => r.enrolled ? tag("yes", "ok") : tag("no", "warn")], ["Protocol", r => r.protocol],
    ["Waypoint", r => r.waypoints.join(", ") || "–"], ["Ready", r => r.ready ? tag("yes", "ok") : tag("no", "bad")],
  ], rows, {onclick: pick, selected: sel, key: r => r.namespace + "/" + r.pod, empty: "no workloads"}));
}

function renderServices() {
  replace("services", table([
    ["Namespace", r => r.namespace], ["Name", r => r.name], ["VIP", r => r.vip || "–"], ["Ports", r => r.ports.join(", ")],
    ["Endpoints", r => r.endpoints.length ? r.endpoints.map(e => tag(`${e.pod.split("/")[1] || e.ip}`, e.ready ? "ok" : "warn")) : "none"],
    ["Waypoint", r => r.waypoint || "–"],
  ], state.services.filter(r => inNs(r.namespace)), {onclick: pick, selected: sel, empty: "no services"}));
}

function renderWaypoints() {
  replace("waypoints", table([
    ["Namespace", r => r.namespace], ["Name", r => r.name],
    ["For", r => r.for + (r.for_service_account ? ` (service account ${r.for_service_account})` : "")],
    ["Serves", r => [...r.services.map(s => tag("svc " + s)), ...r.workloads.map(w => tag("pod " + w))].concat(r.services.length || r.workloads.length ? [] : ["nothing bound"])],
    ["Programmed", r => [tag(r.programmed.status, r.programmed.status === "True" ? "ok" : "bad"), " ", r.programmed.reason]],
    ["Address", r => r.addresses.join(", ") || "–"],
    ["Pods", r => r.pods.map(p => tag(p.pod, p.ready ? "ok" : "warn"))],
    ["Proxy", r => r.proxies.length ? r.proxies.map(p => tag(p.in_sync ? "in sync" : "not in sync", p.in_sync ? "ok" : "warn")) : "not connected"],
    ["Problems", r => r.problems.join("; ") || "–"],
  ], state.waypoints.filter(r => inNs(r.namespace)), {empty: "no waypoints (Gateways of class istio-waypoint)"}));
}

function renderPolicies() {
  const p = state.policies;
  replace("authz", table([
    ["Namespace", r => r.namespace], ["Name", r => r.name], ["Action", r => tag(r.action, r.action.toLowerCase())],
    ["Scope", r => r.scope], ["Rules", r => r.rules],
    ["Applies to", r => r.applies_to.length ? r.applies_to.map(a => tag(`${a.pod} · ${a.enforced_by}${a.via ? " · " + a.via : ""}`)) : el("span", {class: "empty", text: "no workload"})],
    ["Notes", r => [r.status, ...r.notes].filter(Boolean).join(" ") || "–"],
  ], p.authorization.filter(r => inNs(r.namespace) || r.applies_to.some(a => inNs(a.pod.split("/")[0]))),
  {empty: "no AuthorizationPolicies: every connection is allowed"}));
  replace("peerauthn", table([
    ["Namespace", r => r.namespace], ["Name", r => r.name], ["Mode", r => r.mode], ["Scope", r => r.scope],
    ["Port modes", r => Object.entries(r.port_modes).map(([k, v]) => `${k}: ${v}`).join(", ") || "–"],
    ["Applies to", r => r.applies_to.map(a => tag(a))],
  ], p.peer_authentication.filter(r => inNs(r.namespace)), {empty: "no PeerAuthentications: PERMISSIVE everywhere"}));
}

function renderCertificates() {
  replace("certificates", table([
    ["Identity", r => el("span", {class: "mono", text: r.identity})], ["Held by", r => r.holder],
    ["State", r => tag(r.state, {valid: "ok", renewing: "warn"}[r.state] || "bad")],
    ["Serial", r => el("span", {class: "mono", text: r.serial || "–"})],
    ["Expires", r => r.not_after ? `${r.not_after.slice(0, 19)}Z (${fmtDuration(r.expires_in)})` : r.error || "–"],
    ["Renews at", r => r.refresh_at ? r.refresh_at.slice(0, 19) + "Z" : "–"],
    ["Pods", r => r.pods.join(", ") || "–"], ["Chain", r => (r.chain || []).join(" › ") || "–"],
  ], state.certificates.filter(r => !nsFilter || r.identity.includes(`/ns/${nsFilter}/`)),
  {empty: "no certificates (each node's ztunnel holds one per service account of its enrolled pods)"}));
}

function renderTraces() {
  const rows = state.traces;
  const absent = state.sources.filter(s => s.name.endsWith(" traces"));
  const none = absent.length && absent.every(s => s.status !== "ok")
    ? "no traces: the waypoints' and gateway's trace endpoints are not answering (see Sources)"
    : "no traces yet: they appear when requests pass a waypoint or the gateway";
  replace("traces", table([
    ["Start", r => new Date(r.start_unix_nano / 1e6).toLocaleTimeString()],
    ["Request", r => [r.method ? `${r.method} ` : "", r.status_code ? tag(r.status_code, r.status_code[0] === "5" ? "bad" : r.status_code[0] === "4" ? "warn" : "ok") : ""]],
    ["Root span", r => `${r.root_service}: ${r.name}`], ["Duration", r => fmtNum(r.duration_ms) + " ms"],
    ["Spans", r => r.spans.length], ["Services", r => r.services.join(", ")],
    ["Status", r => r.error ? tag("error", "bad") : tag("ok", "ok")],
    ["Trace id", r => el("span", {class: "mono", text: r.trace_id})],
  ], rows, {onclick: r => { selectedTrace = r.trace_id; renderTraces(); }, selected: r => r.trace_id === selectedTrace, empty: none}));
  const t = rows.find(r => r.trace_id === selectedTrace);
  if (!t) { replace("trace-detail"); return; }
  const total = Math.max(t.duration_ms, 0.001);
  replace("trace-detail", el("div", {class: "waterfall"}, el("h4", {text: "trace " + t.trace_id}),
    t.spans.map(s => {
      const bar = el("div", {class: "span-bar" + (s.error ? " err" : ""), title: `${s.duration_ms} ms`});
      bar.style.left = (100 * s.offset_ms / total).toFixed(2) + "%";
      bar.style.width = (100 * s.duration_ms / total).toFixed(2) + "%";
      const name = el("div", {class: "span-name", title: JSON.stringify(s.attributes, null, 1)},
        `${s.service}: ${s.name} (${s.kind}) ${fmtNum(s.duration_ms)} ms`);
      name.style.paddingLeft = (s.depth * 14) + "px";
      return el("div", {class: "span-row"}, name, el("div", {class: "span-track"}, bar));
    })));
}

function renderSources() {
  replace("sources", table([
    ["Source", r => r.name], ["URL", r => el("span", {class: "mono", text: r.url})],
    ["Status", r => tag(r.status, {ok: "ok", absent: "warn"}[r.status] || "bad")], ["Detail", r => r.detail || "–"],
  ], state.sources, {empty: "nothing scraped yet"}));
}

function renderPage(name) {
  ({workloads: renderWorkloads, services: renderServices, waypoints: renderWaypoints, policies: renderPolicies,
    certificates: renderCertificates, traces: renderTraces, sources: renderSources, graph: renderGraph})[name]();
}

// ---- wiring -------------------------------------------------------------------------------
document.querySelectorAll("#tabs button").forEach(b => b.addEventListener("click", () => {
  page = b.dataset.page;
  document.querySelectorAll("#tabs button").forEach(x => x.classList.toggle("active", x === b));
  document.querySelectorAll(".page").forEach(s => s.classList.toggle("active", s.id === "page-" + page));
  location.hash = page;
}));
document.getElementById("ns-filter").addEventListener("change", ev => { nsFilter = ev.target.value; if (state) render(); });
document.getElementById("detail-close").addEventListener("click", () => { selected = null; if (state) render(); });
const start = location.hash.slice(1);
if (start) { const b = document.querySelector(`#tabs button[data-page="${CSS.escape(start)}"]`); if (b) b.click(); }
refresh();
