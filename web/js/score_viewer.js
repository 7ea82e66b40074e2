// Score Viewer: draws a Noise Search report (the node's `ui.noise_search`) on the node itself:
// the best-score-vs-NFE curve, a sortable candidate gallery and the per-verifier table.
// Clicking a candidate sets the node's `pick` widget, so the next run outputs it without sampling again.
// Every note of the report is shown. Works in the canvas and in the Vue ("Nodes 2.0") node renderer, which moves the
// DOM widget's element into the node's Vue component; what the viewer observes is released in `onRemoved`.
const { app } = window.comfyAPI.app;
const { api } = window.comfyAPI.api;

const NODE = "NoiseSearchScoreViewer";
const SVG_NS = "http://www.w3.org/2000/svg";
const STYLE = `
.ns-viewer { box-sizing: border-box; width: 100%; height: 100%; overflow: auto; padding: 6px 8px;
  font: 12px/1.35 system-ui, sans-serif; color: var(--input-text, var(--fg-color, #ddd));
  background: var(--comfy-input-bg, #222); border: 1px solid var(--border-color, #4e4e4e); border-radius: 6px;
  --ns-best: #e8a912; --ns-pick: #14b8a6; --ns-curve: #3b82f6; --ns-base: #e5534b;
  --ns-note: #3b82f6; --ns-warn: #e8a912; }
.ns-viewer .ns-empty { color: var(--descrip-text, #999); padding: 8px 2px; }
.ns-viewer .ns-head { font-weight: 600; margin-bottom: 2px; }
.ns-viewer .ns-sub { color: var(--descrip-text, #999); margin-bottom: 6px; }
.ns-viewer .ns-notes { margin: 4px 0 6px; padding: 3px 8px; border-left: 3px solid var(--ns-note);
  background: color-mix(in srgb, var(--ns-note) 10%, transparent); border-radius: 0 4px 4px 0; }
.ns-viewer .ns-notes ul { margin: 2px 0; padding-left: 16px; }
.ns-viewer .ns-notes li { overflow-wrap: anywhere; }
.ns-viewer .ns-note-item { font-weight: 600; }
.ns-viewer .ns-hint { color: var(--descrip-text, #999); margin-bottom: 4px; }
.ns-viewer .ns-pick-warning { margin-bottom: 4px; padding: 3px 8px; border-left: 3px solid var(--ns-warn);
  background: color-mix(in srgb, var(--ns-warn) 14%, transparent); border-radius: 0 4px 4px 0; overflow-wrap: anywhere; }
.ns-viewer .ns-bar { display: flex; gap: 6px; align-items: center; margin: 6px 0 4px; flex-wrap: wrap; }
.ns-viewer .ns-bar .ns-title { font-weight: 600; margin-right: auto; }
.ns-viewer select, .ns-viewer button { font: inherit; color: inherit; background: var(--comfy-menu-bg, #353535);
  border: 1px solid var(--border-color, #4e4e4e); border-radius: 4px; padding: 1px 6px; cursor: pointer; }
.ns-viewer .ns-curve { position: relative; }
.ns-viewer .ns-curve svg { display: block; width: 100%; }
.ns-viewer .ns-curve text { fill: var(--descrip-text, #999); font-size: 10px; }
.ns-viewer .ns-tip { position: absolute; pointer-events: none; padding: 2px 6px; border-radius: 4px; white-space: nowrap;
  background: var(--comfy-menu-bg, #353535); border: 1px solid var(--border-color, #4e4e4e); display: none; }
.ns-viewer .ns-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(92px, 1fr)); gap: 6px; }
.ns-viewer .ns-thumb { position: relative; border: 2px solid transparent; border-radius: 5px; padding: 2px; cursor: pointer;
  background: var(--comfy-menu-bg, #353535); }
.ns-viewer .ns-thumb:hover { border-color: var(--border-color, #4e4e4e); }
.ns-viewer .ns-thumb img { display: block; width: 100%; aspect-ratio: 1; object-fit: contain; border-radius: 3px; }
.ns-viewer .ns-clip { overflow: hidden; border-radius: 3px; aspect-ratio: 1; }
.ns-viewer .ns-clip img { width: calc(100% * var(--ns-frames)); max-width: none; aspect-ratio: auto; border-radius: 0;
  animation: ns-play calc(0.4s * var(--ns-frames)) steps(var(--ns-frames)) infinite paused; }
.ns-viewer .ns-thumb:hover .ns-clip img { animation-play-state: running; }
@keyframes ns-play { to { transform: translateX(-100%); } }
.ns-viewer .ns-thumb .ns-rank { position: absolute; left: 4px; top: 4px; padding: 0 4px; border-radius: 3px;
  background: var(--comfy-menu-bg, #353535); font-weight: 600; }
.ns-viewer .ns-thumb .ns-score { font-weight: 600; }
.ns-viewer .ns-thumb .ns-members { color: var(--descrip-text, #999); font-size: 10px; }
.ns-viewer .ns-thumb .ns-members div { display: flex; justify-content: space-between; gap: 4px; }
.ns-viewer .ns-thumb .ns-members span:first-child { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ns-viewer .ns-best { border-color: var(--ns-best) !important; }
.ns-viewer .ns-best .ns-rank { background: var(--ns-best); color: #111; }
.ns-viewer .ns-picked { outline: 2px dashed var(--ns-pick); outline-offset: 1px; }
.ns-viewer table { width: 100%; border-collapse: collapse; margin-top: 2px; }
.ns-viewer th, .ns-viewer td { text-align: right; padding: 1px 6px; border-bottom: 1px solid var(--border-color, #4e4e4e); }
.ns-viewer th { cursor: pointer; user-select: none; color: var(--descrip-text, #999); font-weight: 600; }
.ns-viewer tbody tr { cursor: pointer; }
.ns-viewer tbody tr:nth-child(odd) { background: var(--tr-odd-bg-color, transparent); }
.ns-viewer tbody tr.ns-best td:first-child { box-shadow: inset 3px 0 var(--ns-best); }
.ns-viewer tbody tr.ns-picked { outline: none; background: color-mix(in srgb, var(--ns-pick) 25%, transparent); }
`;

function injectStyle() {
  if (document.getElementById("ns-score-viewer-style")) return;
  const style = document.createElement("style");
  style.id = "ns-score-viewer-style";
  style.textContent = STYLE;
  document.head.append(style);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function fmt(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "n/a";
  if (Math.abs(s) >= 1000) return s.toFixed(1);
  if (s !== 0 && Math.abs(s) < 0.001) return s.toPrecision(4);
  return s.toFixed(3);
}

function ticks(lo, hi, n = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(v);
  return out;
}

function viewURL(file) {
  const q = new URLSearchParams({ filename: file.filename, type: file.type, subfolder: file.subfolder ?? "" });
  return api.apiURL(`/view?${q}`);
}

// Final candidates of one item, each with its rank (1 = best) and per-member ranks.
function finalCandidates(data, item) {
  const thumbs = data.thumbnails?.[item] ?? {};
  const res = data.items[item];
  const finals = res.candidates.filter((c) => String(c.id) in thumbs);
  const byScore = (key) => (a, b) => (key(b) ?? -Infinity) - (key(a) ?? -Infinity) || a.id - b.id;
  [...finals].sort(byScore((c) => c.score)).forEach((c, i) => { c.rank = i + 1; });
  memberNames(data, res).forEach((m) => {
    [...finals].sort(byScore((c) => c.members?.[m])).forEach((c, i) => { c.memberRank = { ...c.memberRank, [m]: i + 1 }; });
  });
  return finals.map((c) => ({ ...c, thumb: thumbs[String(c.id)] }));
}

// Every note of the report: the run's own first, then each item's (labelled when there are several items).
function allNotes(data) {
  const several = data.items.length > 1;
  const notes = (data.notes ?? []).map((text) => ({ label: "", text }));
  data.items.forEach((res, i) => {
    for (const text of res.notes ?? []) notes.push({ label: several ? `batch item ${i}` : "", text });
  });
  return notes;
}

function memberNames(data, res) {
  const names = [...(data.members ?? [])];
  for (const c of res.candidates) for (const m of Object.keys(c.members ?? {})) if (!names.includes(m)) names.push(m);
  return names;
}

class ScoreViewer {
  constructor(node) {
    this.node = node;
    this.data = null;
    this.item = 0;
    this.sort = { key: "rank", desc: false };
    this.tableSort = { key: "rank", desc: false };
    this.root = el("div", { class: "ns-viewer" }, el("div", { class: "ns-empty" }, "Run the workflow to see the search: scores, curve and candidates."));
    this.width = 0;
    this.resizeObserver = new ResizeObserver(() => {
      const w = this.root.clientWidth;
      if (this.data && Math.abs(w - this.width) > 4) this.render();
    });
    this.resizeObserver.observe(this.root);
  }

  // Releases what the viewer observes; called when the node leaves the graph.
  dispose() {
    this.resizeObserver.disconnect();
    this.data = null;
    this.root.replaceChildren();
  }

  get pickWidget() {
    return this.node.widgets?.find((w) => w.name === "pick");
  }

  get pick() {
    return this.pickWidget?.value ?? -1;
  }

  setPick(id) {
    const w = this.pickWidget;
    if (!w) return;
    w.value = id;
    w.callback?.(id);
    this.node.setDirtyCanvas?.(true, true);
    app.graph?.setDirtyCanvas(true, true);
    this.render();
  }

  show(data) {
    this.data = data;
    this.item = Math.min(this.item, data.items.length - 1);
    this.render();
  }

  render() {
    const data = this.data;
    const res = data.items[this.item];
    const finals = finalCandidates(data, this.item);
    const members = memberNames(data, res);
    this.width = this.root.clientWidth;
    const gain = res.baseline_score == null ? "" : ` (no search ${fmt(res.baseline_score)}, ${res.best_score - res.baseline_score >= 0 ? "+" : ""}${fmt(res.best_score - res.baseline_score)})`;
    const head = el("div", { class: "ns-head" }, `${res.algorithm} search: best id ${res.best_id} = ${fmt(res.best_score)}${gain}`);
    const verifier = data.verifier + (data.members?.length ? ` [${data.members.join(", ")}]` : "");
    const sub = el("div", { class: "ns-sub" },
      `verifier ${verifier} · ${res.nfe} NFE (planned ${res.nfe_planned}) · ${res.candidates.length} scored · ${data.seconds} s · pick ${this.pick === -1 ? "best" : this.pick}`);
    const parts = [head, sub];
    const notes = this.notes(data);
    if (notes) parts.push(notes);
    if (data.items.length > 1) {
      const select = el("select", { class: "ns-item", onchange: (e) => { this.item = Number(e.target.value); this.render(); } },
        ...data.items.map((_, i) => el("option", { value: i }, `batch item ${i}`)));
      select.value = String(this.item);
      parts.unshift(el("div", { class: "ns-bar" }, el("span", { class: "ns-title" }, "Batch"), select));
    }
    parts.push(this.curve(res), this.gallery(finals, members, res), this.table(finals, members, res));
    if (res.algorithm === "racing") parts.push(this.bracket(res));
    this.root.replaceChildren(...parts);
  }

  // Seed racing: every seed's score at each rung, where it was dropped, and its final score if it finished.
  bracket(res) {
    const steps = res.config?.rung_steps ?? [];
    const rho = res.config?.rung_rho ?? [];
    const reached = (c) => (c.extra?.dropped_at ?? steps.length + 1);
    const rows = [...res.candidates].sort((a, b) => reached(b) - reached(a)
      || (b.final ? b.score : b.extra?.rungs?.at(-1)?.score ?? -Infinity) - (a.final ? a.score : a.extra?.rungs?.at(-1)?.score ?? -Infinity)
      || a.id - b.id);
    const head = el("tr", {}, el("th", {}, "id"), el("th", {}, "seed"),
      ...steps.map((s, j) => el("th", { title: `Spearman rho with the final scores: ${rho[j] == null ? "n/a" : fmt(rho[j])}` }, `rung ${j + 1} (step ${s})`)),
      el("th", {}, "final"), el("th", {}, "outcome"));
    const body = rows.map((c) => el("tr", { class: [c.id === res.best_id ? "ns-best" : "", c.id === this.pick ? "ns-picked" : ""].join(" "), "data-id": c.id,
      ...(c.final ? { onclick: () => this.setPick(c.id) } : {}) },
      el("td", {}, String(c.id)), el("td", {}, `seed + ${c.id}`),
      ...steps.map((_, j) => el("td", {}, fmt(c.extra?.rungs?.[j]?.score))),
      el("td", {}, c.final ? fmt(c.score) : "-"),
      el("td", { class: "ns-outcome" }, c.final ? (c.id === res.best_id ? "winner" : "finished") : c.extra?.dropped_at ? `dropped at rung ${c.extra.dropped_at}` : "not finished (stopped early)")));
    const agreement = steps.map((s, j) => `rung ${j + 1}: rho ${rho[j] == null ? "n/a" : fmt(rho[j])}`).join(" · ");
    return el("div", { class: "ns-bracket" }, el("div", { class: "ns-bar" }, el("span", { class: "ns-title" }, `Racing bracket (${res.candidates.length} seeds)`)),
      el("div", { class: "ns-hint" }, `Rank agreement of rung scores with final scores over the finishers: ${agreement}`),
      el("table", { class: "ns-table" }, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  notes(data) {
    const notes = allNotes(data);
    if (!notes.length) return null;
    return el("div", { class: "ns-notes" }, el("div", { class: "ns-title" }, `Notes (${notes.length})`),
      el("ul", {}, ...notes.map(({ label, text }) => el("li", { class: "ns-note" },
        ...(label ? [el("span", { class: "ns-note-item" }, `${label}: `)] : []), String(text)))));
  }

  curve(res) {
    const W = Math.max(240, this.root.clientWidth - 20), H = 170;
    const L = 46, R = W - 8, T = 8, B = H - 22;
    const scored = res.candidates.filter((c) => c.final && Number.isFinite(c.score));
    const ys = [...res.curve.map((p) => p[1]), ...scored.map((c) => c.score)];
    if (res.baseline_score != null) ys.push(res.baseline_score);
    let lo = Math.min(...ys), hi = Math.max(...ys);
    const pad = (hi - lo) * 0.08 || Math.max(Math.abs(hi) * 0.05, 1e-3);
    lo -= pad; hi += pad;
    const nmax = Math.max(1, res.nfe, ...res.curve.map((p) => p[0]), ...scored.map((c) => c.nfe));
    const px = (n) => L + ((R - L) * n) / nmax;
    const py = (s) => B - ((B - T) * (s - lo)) / (hi - lo);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, height: H, class: "ns-curve-svg" });
    for (const v of ticks(lo, hi)) {
      root.append(svg("line", { x1: L, x2: R, y1: py(v), y2: py(v), stroke: "var(--border-color, #4e4e4e)", "stroke-width": 0.5 }));
      const t = svg("text", { x: L - 4, y: py(v) + 3, "text-anchor": "end" }); t.textContent = String(Number(v.toPrecision(4))); root.append(t);
    }
    for (const v of ticks(0, nmax)) {
      const t = svg("text", { x: px(v), y: H - 8, "text-anchor": "middle" }); t.textContent = String(v); root.append(t);
    }
    const xl = svg("text", { x: R, y: H - 8, "text-anchor": "end" }); xl.textContent = "NFE"; root.append(xl);
    root.append(svg("rect", { x: L, y: T, width: R - L, height: B - T, fill: "none", stroke: "var(--border-color, #4e4e4e)" }));
    for (const c of scored) {
      const dot = svg("circle", { cx: px(c.nfe), cy: py(c.score), r: 2.5, fill: "var(--descrip-text, #999)", "fill-opacity": 0.7 });
      root.append(dot);
    }
    if (res.baseline_score != null) {
      root.append(svg("line", { x1: L, x2: R, y1: py(res.baseline_score), y2: py(res.baseline_score), stroke: "var(--ns-base)", "stroke-dasharray": "5 4", "stroke-width": 1.5, class: "ns-baseline" }));
      const t = svg("text", { x: R - 4, y: py(res.baseline_score) - 4, "text-anchor": "end", style: "fill: var(--ns-base)" });
      t.textContent = `no search ${fmt(res.baseline_score)}`;
      root.append(t);
    }
    let d = "";
    res.curve.forEach(([n, s], i) => { d += i === 0 ? `M${px(n)},${py(s)}` : `H${px(n)}V${py(s)}`; });
    root.append(svg("path", { d, fill: "none", stroke: "var(--ns-curve)", "stroke-width": 2, class: "ns-curve-line" }));
    const best = scored.find((c) => c.id === res.best_id);
    if (best) root.append(svg("circle", { cx: px(best.nfe), cy: py(best.score), r: 5, fill: "none", stroke: "var(--ns-best)", "stroke-width": 2 }));
    const marker = svg("circle", { r: 4, fill: "var(--ns-curve)", visibility: "hidden" });
    root.append(marker);
    const tip = el("div", { class: "ns-tip" });
    const wrap = el("div", { class: "ns-curve" }, root, tip);
    root.addEventListener("mousemove", (e) => {
      if (!res.curve.length) return;
      const rect = root.getBoundingClientRect();
      const x = ((e.clientX - rect.left) * W) / rect.width;
      let k = 0;
      res.curve.forEach(([n], i) => { if (Math.abs(px(n) - x) < Math.abs(px(res.curve[k][0]) - x)) k = i; });
      const [n, s] = res.curve[k];
      marker.setAttribute("cx", px(n)); marker.setAttribute("cy", py(s)); marker.setAttribute("visibility", "visible");
      tip.textContent = `NFE ${n} · best ${fmt(s)}`;
      tip.style.display = "block";
      const scale = rect.width / W;
      tip.style.left = `${Math.min(px(n) * scale + 8, rect.width - tip.offsetWidth - 2)}px`;
      tip.style.top = `${Math.max(0, py(s) * scale - 26)}px`;
    });
    root.addEventListener("mouseleave", () => { tip.style.display = "none"; marker.setAttribute("visibility", "hidden"); });
    return el("div", {}, el("div", { class: "ns-bar" }, el("span", { class: "ns-title" }, "Best score vs NFE")), wrap);
  }

  gallery(finals, members, res) {
    const keys = { rank: (c) => c.rank, score: (c) => c.score, id: (c) => c.id };
    for (const m of members) keys[`member:${m}`] = (c) => c.members?.[m] ?? -Infinity;
    const key = keys[this.sort.key] ? this.sort.key : "rank";
    const sign = this.sort.desc ? -1 : 1;
    const sorted = [...finals].sort((a, b) => sign * (keys[key](a) - keys[key](b)) || a.id - b.id);
    const select = el("select", { class: "ns-sort", onchange: (e) => { this.sort.key = e.target.value; this.sort.desc = e.target.value !== "rank" && e.target.value !== "id"; this.render(); } },
      ...Object.keys(keys).map((k) => el("option", { value: k }, k.startsWith("member:") ? k.slice(7) : k)));
    select.value = key;
    const dir = el("button", { class: "ns-dir", title: "reverse order", onclick: () => { this.sort.desc = !this.sort.desc; this.render(); } }, this.sort.desc ? "↓" : "↑");
    const best = el("button", { class: "ns-pick-best", title: "output the best (pick = -1)", onclick: () => this.setPick(-1) }, "pick best");
    const cards = sorted.map((c) => {
      const cls = ["ns-thumb", c.id === res.best_id ? "ns-best" : "", c.id === this.pick ? "ns-picked" : ""].join(" ");
      const memberLines = members.map((m) => el("div", { title: m }, el("span", {}, m), el("span", {}, fmt(c.members?.[m]))));
      return el("div", { class: cls, "data-id": c.id, title: `id ${c.id}, round ${c.round}, ${c.nfe} NFE: click to pick${c.extra?.frames ? "; hover to play" : ""}`, onclick: () => this.setPick(c.id) },
        c.extra?.frames ? this.clip(c) : el("img", { src: viewURL(c.thumb), alt: `candidate ${c.id}` }),
        el("span", { class: "ns-rank" }, `#${c.rank}`),
        el("div", {}, el("span", { class: "ns-score" }, fmt(c.score)), ` · id ${c.id}`,
          ...(c.extra?.worker !== undefined ? [el("span", { class: "ns-worker", title: "the Ray worker that made it" }, ` · worker ${c.extra.worker}`)] : [])),
        el("div", { class: "ns-members" }, ...memberLines));
    });
    const warning = this.data.pick_warning;
    const hint = el("div", { class: "ns-hint" },
      `Click a candidate to set pick: the next run outputs it${warning ? "" : " without sampling again"}.`);
    return el("div", {}, el("div", { class: "ns-bar" }, el("span", { class: "ns-title" }, `Candidates (${finals.length})`), "sort", select, dir, best),
      hint, ...(warning ? [el("div", { class: "ns-pick-warning" }, String(warning))] : []),
      el("div", { class: "ns-gallery" }, ...cards));
  }

  // A video candidate: its thumbnail is a strip of frames side by side, shown one frame at a time, playing on hover.
  clip(c) {
    const frames = this.data.strip_frames ?? 4;
    const img = el("img", { src: viewURL(c.thumb), alt: `video candidate ${c.id}` });
    const box = el("div", { class: "ns-clip", style: `--ns-frames: ${frames}` }, img);
    img.addEventListener("load", () => { box.style.aspectRatio = `${img.naturalWidth / frames} / ${img.naturalHeight}`; });
    return box;
  }

  table(finals, members, res) {
    const cols = [["rank", "#"], ["id", "id"], ["round", "round"], ["nfe", "NFE"], ["score", members.length ? "ensemble" : this.data.verifier]];
    for (const m of members) cols.push([`member:${m}`, m]);
    const value = (c, key) => (key.startsWith("member:") ? c.members?.[key.slice(7)] : c[key]) ?? -Infinity;
    const { key, desc } = this.tableSort;
    const rows = [...finals].sort((a, b) => (desc ? -1 : 1) * (value(a, key) - value(b, key)) || a.id - b.id);
    const head = el("tr", {}, ...cols.map(([k, label]) => el("th", {
      onclick: () => { this.tableSort = { key: k, desc: k === key ? !desc : !["rank", "id", "round", "nfe"].includes(k) }; this.render(); },
    }, label + (k === key ? (desc ? " ↓" : " ↑") : ""))));
    const body = rows.map((c) => el("tr", { class: [c.id === res.best_id ? "ns-best" : "", c.id === this.pick ? "ns-picked" : ""].join(" "), "data-id": c.id, onclick: () => this.setPick(c.id) },
      ...cols.map(([k]) => {
        if (k.startsWith("member:")) {
          const m = k.slice(7);
          return el("td", {}, `${fmt(c.members?.[m])} (${c.memberRank?.[m] ?? "-"})`);
        }
        return el("td", {}, k === "score" ? fmt(c.score) : String(c[k]));
      })));
    return el("div", {}, el("div", { class: "ns-bar" }, el("span", { class: "ns-title" }, "Per-verifier scores (member rank in brackets)")),
      el("table", { class: "ns-table" }, el("thead", {}, head), el("tbody", {}, ...body)));
  }
}

app.registerExtension({
  name: "NoiseSearch.ScoreViewer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    injectStyle();
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const out = onNodeCreated?.apply(this, arguments);
      this.noiseSearchViewer = new ScoreViewer(this);
      const widget = this.addDOMWidget("noise_search_viewer", "noise_search_viewer", this.noiseSearchViewer.root, {
        serialize: false, getMinHeight: () => 580,
      });
      widget.serialize = false;
      this.setSize([Math.max(this.size[0], 640), Math.max(this.size[1], 740)]);
      return out;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      this.noiseSearchViewer?.dispose();
      return onRemoved?.apply(this, arguments);
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const data = message?.noise_search?.[0];
      if (!data) return;
      this.noiseSearchViewer?.show(data);
      this.noiseSearchGrow = true;
    };
    // The core draws the chart (`ui.images`) in a preview widget it adds once the image has loaded: make room for it once.
    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function () {
      const out = onDrawBackground?.apply(this, arguments);
      if (this.noiseSearchGrow && this.widgets?.some((w) => w.name === "$$canvas-image-preview")) {
        this.noiseSearchGrow = false;
        const [w, h] = this.computeSize();
        this.setSize([Math.max(this.size[0], w), Math.max(this.size[1], h + 160)]);
        this.setDirtyCanvas(true, true);
      }
      return out;
    };
  },
});
