// Driftline ops dashboard: polls api/timeseries and draws every chart as inline SVG.
// No libraries: the machine this runs on may have no internet, and the page must
// work from the monitor's admin port alone.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const HEIGHT = 190;
  const MARGIN = { left: 54, right: 14, top: 16, bottom: 24 };
  const PALETTE = ["#1f6fd1", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285",
                   "#e67700", "#495057"];
  const RATE_ORDER = ["features", "predictions", "labels"];
  const STATS = { psi: "PSI", ks: "KS", js: "Jensen-Shannon" };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const only = new URLSearchParams(window.location.search).get("model");

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function html(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clock(t) {
    return new Date(t * 1000).toTimeString().slice(0, 8);
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1000) return v.toFixed(0);
    if (a >= 10) return v.toFixed(a >= 100 ? 0 : 1);
    if (a >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  // A "nice" tick step (1, 2 or 5 times a power of ten) giving about `count` ticks.
  function niceStep(span, count) {
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  }

  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

  function timeStep(span, count) {
    for (const s of TIME_STEPS) if (span / s <= count) return s;
    return TIME_STEPS[TIME_STEPS.length - 1];
  }

  // Draws one chart into `host`.
  //   spec.series:     [{name, points: [[t, v], ...], color, dashed}]
  //   spec.markers:    [{t, kind: "drift"|"champion"|"retrain", label, title}]
  //   spec.thresholds: [{value, label}]
  //   spec.yMin/yMax:  fixed bounds (optional); spec.step: draw as a step line
  //   spec.domain:     [t0, t1] shared by every chart
  function drawChart(host, spec) {
    host.replaceChildren();
    const series = spec.series.filter((s) => s.points.length > 0);
    if (series.length === 0) {
      host.appendChild(html("div", { class: "empty" }, "no data yet"));
      return;
    }
    const width = Math.max(320, Math.floor(host.clientWidth || 600));
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const [t0, t1] = spec.domain;

    let lo = Infinity;
    let hi = -Infinity;
    for (const s of series) for (const [, v] of s.points) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    for (const th of spec.thresholds || []) { lo = Math.min(lo, th.value); hi = Math.max(hi, th.value); }
    if (spec.yMin !== undefined) lo = Math.min(lo, spec.yMin);
    if (spec.yMax !== undefined) hi = Math.max(hi, spec.yMax);
    if (spec.zero) lo = Math.min(lo, 0);
    if (hi - lo < 1e-9) { hi += 1; lo = spec.zero ? lo : lo - 1; }
    const ystep = niceStep(hi - lo, 4);
    lo = Math.floor(lo / ystep + 1e-9) * ystep;
    hi = Math.ceil(hi / ystep - 1e-9) * ystep;

    const x = (t) => MARGIN.left + ((t - t0) / (t1 - t0)) * plotW;
    const y = (v) => MARGIN.top + (1 - (v - lo) / (hi - lo)) * plotH;

    const root = svg("svg", {
      width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img",
      "aria-label": spec.title || "chart",
    });

    // y axis: grid lines and labels
    for (let v = lo; v <= hi + ystep / 2; v += ystep) {
      root.appendChild(svg("line", { class: "grid-line", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v) }));
      root.appendChild(svg("text", { class: "tick y-tick", x: MARGIN.left - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    if (spec.unit) {
      root.appendChild(svg("text", { class: "unit", x: 4, y: MARGIN.top - 5 }, spec.unit));
    }
    // x axis: clock-time ticks
    const tstep = timeStep(t1 - t0, Math.max(2, Math.floor(plotW / 90)));
    for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
      root.appendChild(svg("line", { class: "axis", x1: x(t), x2: x(t), y1: HEIGHT - MARGIN.bottom, y2: HEIGHT - MARGIN.bottom + 4 }));
      root.appendChild(svg("text", { class: "tick x-tick", x: x(t), y: HEIGHT - 6, "text-anchor": "middle" }, clock(t)));
    }
    root.appendChild(svg("line", { class: "axis x-axis", x1: MARGIN.left, x2: width - MARGIN.right, y1: HEIGHT - MARGIN.bottom, y2: HEIGHT - MARGIN.bottom }));
    root.appendChild(svg("line", { class: "axis y-axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }));

    for (const th of spec.thresholds || []) {
      const line = svg("line", { class: "threshold", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(th.value), y2: y(th.value) });
      line.appendChild(svg("title", {}, `${th.label} alarm level ${th.value}`));
      root.appendChild(line);
    }

    series.forEach((s, index) => {
      let d = "";
      s.points.forEach(([t, v], i) => {
        if (i === 0) d += `M${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        else if (spec.step) d += `H${x(t).toFixed(1)}V${y(v).toFixed(1)}`;
        else d += `L${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      });
      if (spec.step) d += `H${x(t1).toFixed(1)}`;
      const path = svg("path", { class: "series-line", d, stroke: s.color, "data-series": s.name,
                                 "data-points": s.points.length });
      if (s.dashed) path.setAttribute("stroke-dasharray", "6 3");
      // Series that often coincide (events/s of the three topics): earlier ones wider,
      // so a line drawn over another leaves it visible.
      if (spec.layered) path.style.strokeWidth = String(2 + 1.8 * (series.length - 1 - index));
      root.appendChild(path);
      if (s.points.length <= 40) {
        for (const [t, v] of s.points) {
          const dot = svg("circle", { class: "point", cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, fill: s.color });
          dot.appendChild(svg("title", {}, `${s.name} ${fmt(v)} at ${clock(t)}`));
          root.appendChild(dot);
        }
      }
    });

    for (const m of spec.markers || []) {
      if (m.t < t0 || m.t > t1) continue;
      const group = svg("g", { class: `marker-group marker-group-${m.kind}` });
      group.appendChild(svg("title", {}, m.title || m.label));
      group.appendChild(svg("line", { class: `marker marker-${m.kind}`, x1: x(m.t), x2: x(m.t), y1: MARGIN.top, y2: HEIGHT - MARGIN.bottom }));
      const fx = x(m.t);
      group.appendChild(svg("path", { class: `flag flag-${m.kind}`, d: `M${fx - 5},${MARGIN.top - 10}h10l-5,8z` }));
      if (m.label) {
        group.appendChild(svg("text", { class: `flag-label flag-${m.kind}`, x: fx + 6, y: MARGIN.top - 3 }, m.label));
      }
      root.appendChild(group);
    }
    host.appendChild(root);

    const legend = html("div", { class: "legend" });
    for (const s of series) {
      const item = html("span", { class: "item" });
      const swatch = html("span", { class: "swatch" + (s.dashed ? " dashed" : "") });
      swatch.style.background = s.dashed ? "transparent" : s.color;
      swatch.style.borderColor = s.color;
      item.append(swatch, document.createTextNode(s.name));
      legend.appendChild(item);
    }
    for (const th of spec.thresholds || []) {
      const item = html("span", { class: "item" });
      const swatch = html("span", { class: "swatch dashed" });
      swatch.style.borderColor = "#c62828";
      item.append(swatch, document.createTextNode(`${th.label} alarm`));
      legend.appendChild(item);
    }
    const kinds = new Set((spec.markers || []).filter((m) => m.t >= t0 && m.t <= t1).map((m) => m.kind));
    const KIND_TEXT = { drift: "drift detected", champion: "champion change", retrain: "retraining requested" };
    const KIND_COLOR = { drift: "#d32f2f", champion: "#2e7d32", retrain: "#ef6c00" };
    for (const k of kinds) {
      const item = html("span", { class: "item" });
      const swatch = html("span", { class: "swatch dashed" });
      swatch.style.borderColor = KIND_COLOR[k];
      item.append(swatch, document.createTextNode(KIND_TEXT[k]));
      legend.appendChild(item);
    }
    host.appendChild(legend);
  }

  // ---------------------------------------------------------------- the data

  // "prefix/rest" series of one kind, as {rest: points}
  function byPrefix(data, prefix) {
    const out = {};
    for (const [name, points] of Object.entries(data.series)) {
      if (name.startsWith(prefix + "/")) out[name.slice(prefix.length + 1)] = points;
    }
    return out;
  }

  function wanted(model) {
    return only === null || model === only;
  }

  function colorOf(index) {
    return PALETTE[index % PALETTE.length];
  }

  function perModel(data, prefix) {
    return Object.entries(byPrefix(data, prefix))
      .filter(([model]) => wanted(model))
      .sort(([a], [b]) => a.localeCompare(b));
  }

  function markerView(m) {
    if (m.kind === "drift") {
      const what = m.features && m.features.length ? ` ${m.features.join(", ")}` : "";
      return { t: m.t, kind: "drift", label: "",
               title: `${m.drift_kind} drift (${m.detector})${what} — ${m.model}, ${m.severity}` };
    }
    if (m.kind === "champion") {
      return { t: m.t, kind: "champion", label: `v${m.version}`, title: `${m.model}: champion is now v${m.version}` };
    }
    return { t: m.t, kind: "retrain", label: "", title: `${m.model}: retraining requested (${m.request_id})` };
  }

  function domainOf(data, names, markers) {
    let t0 = Infinity;
    let t1 = -Infinity;
    for (const name of names) {
      for (const [t] of data.series[name] || []) { t0 = Math.min(t0, t); t1 = Math.max(t1, t); }
    }
    for (const m of markers) { t0 = Math.min(t0, m.t); t1 = Math.max(t1, m.t); }
    if (!isFinite(t0)) return [data.now - 60, data.now];
    t1 = Math.max(t1, Math.min(data.now, t1 + 3600));
    if (t1 - t0 < 10) t0 = t1 - 10;
    return [t0, t1];
  }

  function featuresetsInView(data) {
    // The feature sets of the models in view (a feature set with no model stands for itself).
    if (only === null) return null;
    const fs = new Set([only]);
    if (data.featuresets && data.featuresets[only]) fs.add(data.featuresets[only]);
    return fs;
  }

  function ownerOf(data, featureset) {
    for (const [model, fs] of Object.entries(data.featuresets || {})) if (fs === featureset) return model;
    return featureset;
  }

  function render(data) {
    const fsInView = featuresetsInView(data);
    const markers = data.markers.filter((m) => wanted(m.model) || (fsInView && fsInView.has(m.model)));
    const names = Object.keys(data.series).filter((name) => {
      const [prefix, rest] = [name.split("/")[0], name.split("/").slice(1)];
      if (prefix === "events_per_s") return true;
      if (prefix in STATS) return fsInView === null || fsInView.has(rest[0]);
      return wanted(rest.join("/"));
    });
    const domain = domainOf(data, names, markers);
    const chart = (key) => document.querySelector(`[data-chart="${key}"] .chart`);

    drawChart(chart("events"), {
      title: "events per second", domain, unit: "events/s", zero: true, layered: true,
      series: RATE_ORDER.map((topic, i) => ({
        name: topic, color: colorOf(i), points: (data.series[`events_per_s/${topic}`] || []),
      })),
      markers: markers.filter((m) => m.kind === "retrain").map(markerView),
    });

    const models = perModel(data, "accuracy");
    // Dashed: the accuracy estimated without labels (CBPE), from the served confidences.
    const estimated = byPrefix(data, "estimated_accuracy");
    drawChart(chart("accuracy"), {
      title: "live accuracy", domain, yMin: 0, yMax: 1, unit: "accuracy",
      series: models.flatMap(([model, points], i) => [
        { name: model, color: colorOf(i), points },
        ...(estimated[model] ? [{ name: `${model} estimated`, color: colorOf(i), dashed: true,
                                  points: estimated[model] }] : []),
      ]),
      markers: markers
        .filter((m) => (m.kind === "drift" && m.drift_kind !== "data") || m.kind !== "drift")
        .map(markerView),
    });

    drawDrift(chart("drift"), data, domain, markers, fsInView);

    drawChart(chart("versions"), {
      title: "champion version", domain, step: true, zero: true, unit: "version",
      series: perModel(data, "champion_version").map(([model, points], i) => ({ name: model, color: colorOf(i), points })),
      markers: markers.filter((m) => m.kind === "champion").map(markerView),
    });

    const latency = [];
    perModel(data, "latency_ms_p50").forEach(([model, points], i) => {
      latency.push({ name: `${model} p50`, color: colorOf(i), points });
      latency.push({ name: `${model} p99`, color: colorOf(i), dashed: true,
                     points: data.series[`latency_ms_p99/${model}`] || [] });
    });
    drawChart(chart("latency"), {
      title: "predict latency", domain, unit: "ms", zero: true, series: latency,
      markers: markers.filter((m) => m.kind === "champion").map(markerView),
    });

    drawLog(chart("events-log"), markers, data.links || {});
  }

  function drawDrift(host, data, domain, markers, fsInView) {
    // {featureset: {feature: {stat: points}}}
    const tree = {};
    for (const [name, points] of Object.entries(data.series)) {
      const parts = name.split("/");
      if (!(parts[0] in STATS) || parts.length < 3) continue;
      const [stat, fs] = parts;
      const feature = parts.slice(2).join("/");
      if (fsInView !== null && !fsInView.has(fs)) continue;
      ((tree[fs] = tree[fs] || {})[feature] = tree[fs][feature] || {})[stat] = points;
    }
    host.replaceChildren();
    const keys = [];
    for (const fs of Object.keys(tree).sort()) {
      for (const feature of Object.keys(tree[fs]).sort()) keys.push([fs, feature]);
    }
    if (keys.length === 0) {
      host.appendChild(html("div", { class: "empty" }, "no data yet"));
      return;
    }
    const pending = [];
    for (const [fs, feature] of keys) {
      const owner = ownerOf(data, fs);
      const hits = markers.filter((m) => m.kind === "drift" && m.drift_kind === "data" &&
                                         m.model === owner && (m.features || []).includes(feature));
      const sub = html("div", { class: "sub", "data-feature": `${fs}/${feature}`, "data-detections": hits.length });
      const title = html("h3", {}, feature);
      title.appendChild(html("small", {}, fs));
      if (hits.length) title.appendChild(html("span", { class: "alarm" }, `● ${hits.length} detection${hits.length > 1 ? "s" : ""}`));
      sub.appendChild(title);
      const body = html("div", { class: "sub-chart" });
      sub.appendChild(body);
      host.appendChild(sub);
      pending.push([fs, feature, body, hits]);
    }
    // Draw only once every cell is in the grid: each chart takes its cell's final width.
    for (const [fs, feature, body, hits] of pending) {
      const stats = tree[fs][feature];
      const thresholds = [];
      if (stats.psi) thresholds.push({ value: data.thresholds.psi, label: "PSI" });
      if (stats.js) thresholds.push({ value: data.thresholds.js, label: "JS" });
      drawChart(body, {
        title: `${feature} drift`, domain, zero: true, thresholds,
        series: Object.keys(STATS).filter((s) => stats[s]).map((s, i) => ({
          name: STATS[s], color: colorOf(i), points: stats[s],
        })),
        markers: hits.map(markerView),
      });
    }
  }

  function drawLog(host, markers, links) {
    host.replaceChildren();
    const recent = markers.slice(-8).reverse();
    if (recent.length === 0) {
      host.appendChild(html("div", { class: "empty" }, "no data yet"));
      return;
    }
    const table = html("table", { class: "log" });
    const head = html("tr");
    for (const h of ["time", "what", "model", "detail"]) head.appendChild(html("th", {}, h));
    table.appendChild(head);
    for (const m of recent) {
      const row = html("tr");
      row.appendChild(html("td", {}, clock(m.t)));
      let what = m.kind;
      let detail = "";
      if (m.kind === "drift") {
        what = `${m.drift_kind} drift`;
        detail = `${m.detector}${m.features && m.features.length ? " on " + m.features.join(", ") : ""} · ${m.severity}`;
      } else if (m.kind === "champion") {
        what = "champion change";
        detail = `now v${m.version}`;
      } else if (m.kind === "retrain") {
        what = "retraining requested";
        detail = m.request_id || "";
      }
      row.appendChild(html("td", { class: `kind-${m.kind}` }, what));
      row.appendChild(html("td", {}, m.model));
      const jaeger = links.Jaeger;
      if (m.kind === "retrain" && m.request_id && jaeger) {
        // The loop's spans carry driftline.retrain.id: Jaeger's search finds its trace.
        const tags = encodeURIComponent(JSON.stringify({ "driftline.retrain.id": m.request_id }));
        const cell = html("td");
        cell.appendChild(html("a", {
          href: `${jaeger.replace(/\/$/, "")}/search?service=driftline-monitoring&tags=${tags}`,
          class: "trace-link",
        }, `${detail} (trace)`));
        row.appendChild(cell);
      } else {
        row.appendChild(html("td", {}, detail));
      }
      table.appendChild(row);
    }
    host.appendChild(table);
  }

  // ----------------------------------------------------------------- polling

  const status = document.getElementById("status");
  if (only !== null) document.getElementById("scope").textContent = `model: ${only}`;

  function renderLinks(links) {
    const nav = document.getElementById("links");
    const names = Object.keys(links).sort();
    if (nav.dataset.shown === names.map((n) => `${n}=${links[n]}`).join("|")) return;
    nav.textContent = "";
    for (const name of names) {
      nav.appendChild(html("a", { href: links[name], target: "_blank", rel: "noopener" }, name));
    }
    nav.dataset.shown = names.map((n) => `${n}=${links[n]}`).join("|");
  }

  async function refresh() {
    try {
      const response = await fetch("api/timeseries", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      lastData = data;
      renderLinks(data.links || {});
      render(data);
      status.textContent = `updated ${clock(data.now)} · every ${REFRESH_MS / 1000} s`;
      status.classList.remove("error");
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
    } catch (err) {
      status.textContent = `cannot read api/timeseries: ${err.message}`;
      status.classList.add("error");
    } finally {
      window.setTimeout(refresh, REFRESH_MS);
    }
  }

  let lastData = null;
  window.addEventListener("resize", () => { if (lastData !== null) render(lastData); });
  refresh();
})();
