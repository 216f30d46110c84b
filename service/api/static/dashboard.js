// labelloop dashboard: vanilla JS, inline SVG, no dependency. Every figure comes from the ops-scope
// JSON routes under v1/metrics/ and v1/advice/ (relative URLs: the page works behind a path prefix). The key, if the
// server asks for one, is typed once, kept in sessionStorage and sent only as an Authorization header.
"use strict";

(() => {
  const KEY_STORE = "labelloop.ops-key";
  const KINDS = ["explicit", "behavioral", "natural", "implicit_negative"];
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const state = {
    timer: null,
    renders: 0,
    inFlight: false,
    knownModels: [], // [{model, model_version}] of the selected use case and range
  };

  // -- formatting -------------------------------------------------------------------------------

  function fmtCount(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }
  function fmtPct(x) {
    return x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)} %`;
  }
  // Seconds in the largest unit that keeps the number readable; 3 significant digits.
  function fmtDelay(s) {
    if (s === null || s === undefined) return "–";
    const units = [
      [86400, "d"],
      [3600, "h"],
      [60, "min"],
      [1, "s"],
      [0.001, "ms"],
    ];
    for (const [size, unit] of units) {
      if (s >= size || size === 0.001) return `${Number((s / size).toPrecision(3))} ${unit}`;
    }
    return `${s} s`;
  }
  function fmtTime(iso) {
    if (!iso) return "–";
    return iso.replace("T", " ").replace(/(\.\d+)?\+00:00$/, " UTC");
  }

  // -- DOM helpers (textContent only: names and reasons come from the data) ----------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v;
      else node.setAttribute(k, String(v));
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // A figure the test reads back: data-figure names it, data-value holds the raw JSON value.
  function figure(name, value, text, scope) {
    return el("span", { class: "value", "data-figure": name, "data-scope": scope, "data-value": JSON.stringify(value ?? null) }, text);
  }
  function card(label, name, value, text, warn) {
    return el("div", { class: warn ? "card warn" : "card" }, el("div", { class: "label" }, label), figure(name, value, text, "summary"));
  }

  // -- the key ----------------------------------------------------------------------------------

  function key() {
    return sessionStorage.getItem(KEY_STORE);
  }
  function askForKey(reason) {
    return new Promise((resolve) => {
      const dialog = $("key-dialog");
      $("key-reason").textContent = reason;
      $("key-input").value = "";
      $("key-form").onsubmit = (e) => {
        e.preventDefault();
        const value = $("key-input").value.trim();
        if (!value) return;
        sessionStorage.setItem(KEY_STORE, value);
        dialog.close();
        $("forget-key").hidden = false;
        resolve();
      };
      if (!dialog.open) dialog.showModal();
      document.body.dataset.state = "needs-key";
    });
  }

  class NeedsKey extends Error {}

  async function getJSON(path, params) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") query.set(k, v);
    const headers = { Accept: "application/json" };
    const k = key();
    if (k) headers.Authorization = `Bearer ${k}`;
    const response = await fetch(`${path}?${query}`, { headers, credentials: "omit", cache: "no-store" });
    if (response.status === 401 || response.status === 403) {
      let msg = response.status === 401 ? "This server requires an API key." : "This key lacks the ops scope.";
      try {
        msg = (await response.json()).detail[0].msg;
      } catch (_) {
        /* keep the generic reason */
      }
      if (response.status === 401) sessionStorage.removeItem(KEY_STORE);
      throw new NeedsKey(msg);
    }
    if (!response.ok) {
      let msg = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        msg = `${body.error}: ${body.detail.map((d) => d.msg).join("; ")}`;
      } catch (_) {
        /* keep the status line */
      }
      throw new Error(`${path}: ${msg}`);
    }
    return response.json();
  }

  // -- filters ----------------------------------------------------------------------------------

  function hourFloor(date) {
    const d = new Date(date);
    d.setUTCMinutes(0, 0, 0);
    return d;
  }
  function fromLocalInput(value) {
    return value ? new Date(`${value}:00Z`) : null; // the inputs are read as UTC
  }
  function toLocalInput(date) {
    return date.toISOString().slice(0, 16);
  }

  // The served range and trend the page asks for.
  function selection() {
    const range = $("f-range").value;
    let since = null;
    let until = null;
    if (range === "custom") {
      since = fromLocalInput($("f-from").value);
      until = fromLocalInput($("f-to").value);
    } else if (range !== "all") {
      until = new Date();
      since = hourFloor(until.getTime() - Number(range) * 3600e3);
    }
    let trend = $("f-trend").value;
    const hours = since && until ? (until - since) / 3600e3 : Infinity;
    if (trend === "hour" && hours > 31 * 24) trend = "day"; // the API's hourly trend spans at most 31 days
    return {
      use_case: $("f-use-case").value || null,
      since: since ? since.toISOString() : null,
      until: until ? until.toISOString() : null,
      trend,
      model: $("f-model").value || null,
      model_version: $("f-version").value || null,
    };
  }

  function setOptions(select, values, allLabel) {
    const current = select.value;
    select.replaceChildren(el("option", { value: "" }, allLabel));
    for (const v of values) select.append(el("option", { value: v }, v));
    select.value = values.includes(current) ? current : "";
  }

  // -- charts -----------------------------------------------------------------------------------

  const MARKS = [
    ["p50_s", "p50", "mark-p50"],
    ["p90_s", "p90", "mark-p90"],
    ["p99_s", "p99", "mark-p99"],
  ];

  // Ticks under a time axis at y0, labelled as delays.
  function timeTicks(chart, seconds, x, y0) {
    for (const s of seconds) {
      chart.append(svg("line", { class: "tick", x1: x(s), x2: x(s), y1: y0, y2: y0 + 4 }));
      chart.append(svg("text", { class: "axis", x: x(s), y: y0 + 15, "text-anchor": "middle" }, fmtDelay(s)));
    }
  }

  // Histogram of log-width buckets on a log time axis; p50, p90 and p99 as vertical lines.
  function histogramChart(d) {
    const W = 440;
    const H = 170;
    const pad = { l: 40, r: 10, t: 18, b: 28 };
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    const buckets = d.histogram || [];
    if (!buckets.length) return chart;
    const lo = Math.max(1e-3, buckets[0].le_s / 1.1 / 2);
    const hi = Math.max(buckets[buckets.length - 1].le_s * 1.5, lo * 10);
    const lx0 = Math.log10(lo);
    const lx1 = Math.log10(hi);
    const x = (s) => pad.l + ((Math.log10(Math.max(s, lo)) - lx0) / (lx1 - lx0)) * (W - pad.l - pad.r);
    const maxCount = Math.max(...buckets.map((b) => b.count));
    const y = (c) => H - pad.b - (c / maxCount) * (H - pad.t - pad.b);
    chart.append(svg("title", {}, `delay histogram, ${d.count} events`));
    for (const b of buckets) {
      const x0 = x(b.le_s / 1.1);
      const x1 = x(b.le_s);
      chart.append(
        svg("rect", { class: "bar", x: x0, y: y(b.count), width: Math.max(1, x1 - x0 - 0.5), height: H - pad.b - y(b.count) }),
      );
    }
    const decades = [];
    for (let p = Math.ceil(lx0); p <= Math.floor(lx1); p++) decades.push(10 ** p);
    timeTicks(chart, decades, x, H - pad.b);
    chart.append(svg("line", { class: "axis-line", x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
    chart.append(svg("text", { class: "axis", x: pad.l - 4, y: pad.t + 4, "text-anchor": "end" }, fmtCount(maxCount)));
    MARKS.forEach(([field, label, cls], i) => {
      if (d[field] === null) return;
      const at = x(d[field]);
      chart.append(svg("line", { class: `mark ${cls}`, x1: at, x2: at, y1: pad.t - 6, y2: H - pad.b }));
      chart.append(svg("text", { class: `mark-label ${cls}`, x: at + 3, y: pad.t - 8 + i * 10 + 8 }, label));
    });
    return chart;
  }

  // Lines over periods: series [{name, cls, values: [number|null]}], log y when asked.
  function lineChart(periods, series, { log = false, fmt = fmtCount, title = "" } = {}) {
    const W = 440;
    const H = 170;
    const pad = { l: 52, r: 20, t: 12, b: 28 };
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    chart.append(svg("title", {}, title));
    const all = series.flatMap((s) => s.values).filter((v) => v !== null && (!log || v > 0));
    if (!all.length || !periods.length) return chart;
    let lo = log ? Math.min(...all) : 0;
    let hi = Math.max(...all);
    if (log) {
      lo = Math.log10(lo) - 0.1;
      hi = Math.log10(hi) + 0.1;
    } else if (hi === lo) hi = lo + 1;
    const tr = (v) => (log ? Math.log10(v) : v);
    const n = periods.length;
    const x = (i) => pad.l + (n === 1 ? (W - pad.l - pad.r) / 2 : (i / (n - 1)) * (W - pad.l - pad.r));
    const y = (v) => H - pad.b - ((tr(v) - lo) / (hi - lo)) * (H - pad.t - pad.b);
    chart.append(svg("line", { class: "axis-line", x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
    for (const v of [log ? 10 ** lo : lo, log ? 10 ** hi : hi]) {
      chart.append(svg("text", { class: "axis", x: pad.l - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
    }
    const step = Math.max(1, Math.ceil(n / 6));
    for (let i = 0; i < n; i += step) {
      chart.append(svg("text", { class: "axis", x: x(i), y: H - pad.b + 15, "text-anchor": "middle" }, periods[i]));
    }
    for (const s of series) {
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null || (log && v <= 0)) return;
        d += `${d ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        chart.append(svg("circle", { class: `dot ${s.cls}`, cx: x(i), cy: y(v), r: 2 }));
      });
      if (d) chart.append(svg("path", { class: `line ${s.cls}`, d }));
    }
    return chart;
  }

  const WINDOW_TICKS = [1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400];

  // Fake-negative rate against the window (log axis): the 95% interval as a band, the target as a
  // dashed level, the windows in `marks` ([window_s, label, class]) as vertical lines.
  function adviceChart(curve, target, marks, title) {
    const W = 440;
    const H = 170;
    const pad = { l: 40, r: 10, t: 24, b: 28 };
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    chart.append(svg("title", {}, title));
    if (!curve.length) return chart;
    const lo = curve[0].window_s;
    const hi = Math.max(curve[curve.length - 1].window_s, lo * 10);
    const lx0 = Math.log10(lo);
    const lx1 = Math.log10(hi);
    const x = (s) => pad.l + ((Math.log10(s) - lx0) / (lx1 - lx0)) * (W - pad.l - pad.r);
    const y = (r) => H - pad.b - r * (H - pad.t - pad.b);
    const at = (p, r) => `${x(p.window_s).toFixed(1)},${y(r).toFixed(1)}`;
    const upper = curve.map((p) => at(p, p.interval[1]));
    const lower = curve.map((p) => at(p, p.interval[0])).reverse();
    chart.append(svg("path", { class: "band", d: `M${upper.join("L")}L${lower.join("L")}Z` }));
    chart.append(svg("path", { class: "line s-fnr", d: `M${curve.map((p) => at(p, p.fake_negative_rate)).join("L")}` }));
    for (const p of curve) chart.append(svg("circle", { class: "dot s-fnr", cx: x(p.window_s), cy: y(p.fake_negative_rate), r: 2 }));
    timeTicks(chart, WINDOW_TICKS.filter((s) => s >= lo && s <= hi), x, H - pad.b);
    chart.append(svg("line", { class: "axis-line", x1: pad.l, x2: W - pad.r, y1: H - pad.b, y2: H - pad.b }));
    for (const r of [0, 0.5, 1]) chart.append(svg("text", { class: "axis", x: pad.l - 4, y: y(r) + 4, "text-anchor": "end" }, `${r * 100} %`));
    chart.append(svg("line", { class: "mark mark-target", x1: pad.l, x2: W - pad.r, y1: y(target), y2: y(target) }));
    marks.forEach(([windowS, label, cls], i) => {
      if (windowS === null || windowS < lo || windowS > hi) return;
      const mx = x(windowS);
      chart.append(svg("line", { class: `mark ${cls}`, "data-window-s": windowS, x1: mx, x2: mx, y1: pad.t - 4, y2: H - pad.b }));
      chart.append(svg("text", { class: `mark-label ${cls}`, x: mx + 3, y: pad.t - 14 + i * 10 }, label));
    });
    return chart;
  }

  function legend(items) {
    return el("div", { class: "legend" }, ...items.map(([cls, label]) => el("span", { class: `key ${cls}` }, label)));
  }

  // -- panels -----------------------------------------------------------------------------------

  function renderSummary(uc, figures, pipeline) {
    $("cards").replaceChildren(
      card("Served", "served", figures.served, fmtCount(figures.served)),
      card("Labeled", "labeled", figures.labeled, fmtCount(figures.labeled)),
      card("Coverage", "coverage", figures.coverage, fmtPct(figures.coverage)),
      card("Pending windows", "pending", figures.pending, fmtCount(figures.pending)),
      card("Revisions (negative → positive)", "revisions", figures.revisions, fmtCount(figures.revisions), figures.revisions > 0),
      card("Too-late events", "late_events", figures.late_events, fmtCount(figures.late_events), figures.late_events > 0),
      card("Expired (no label)", "expired", figures.expired, fmtCount(figures.expired)),
      card("Clock skew", "clock_skew", figures.clock_skew, fmtCount(figures.clock_skew)),
      card("Watermark lag", "watermark_lag_s", pipeline.watermark_lag_s, fmtDelay(pipeline.watermark_lag_s)),
      card("Dead letters", "dead_letters", pipeline.dead_letters, fmtCount(pipeline.dead_letters), pipeline.dead_letters > 0),
    );
  }

  function mixBar(byKind, scope) {
    const total = KINDS.reduce((a, k) => a + (byKind[k] || 0), 0);
    const bar = el("div", { class: "mixbar" });
    const rows = el("div", { class: "mixrows" });
    for (const k of KINDS) {
      const n = byKind[k] || 0;
      if (total && n) {
        const seg = el("span", { class: `seg kind-${k}`, title: `${k}: ${n}` });
        seg.style.flexGrow = String(n); // CSSOM, allowed by the page's style-src 'self'
        bar.append(seg);
      }
      rows.append(
        el(
          "div",
          { class: "mixrow" },
          el("span", { class: `key kind-${k}` }, k.replace("_", " ")),
          figure(`labels_by_kind.${k}`, n, fmtCount(n), scope),
          el("span", { class: "share" }, total ? fmtPct(n / total) : "–"),
        ),
      );
    }
    if (!total) bar.append(el("span", { class: "empty" }, "no labels yet"));
    return el("div", { class: "mix" }, bar, rows);
  }

  function renderMix(figures, modelRow, modelLabel) {
    const parts = [el("h3", {}, "All models of the use case"), mixBar(figures.labels_by_kind, "summary")];
    if (modelRow) parts.push(el("h3", {}, modelLabel), mixBar(modelRow.labels_by_kind, "model"));
    $("mix").replaceChildren(...parts);
  }

  function renderDelays(figures) {
    const types = Object.keys(figures.feedback_delay).sort();
    if (!types.length) {
      $("delays").replaceChildren(el("p", { class: "empty" }, "No joined events in this range."));
      return;
    }
    $("delays").replaceChildren(
      ...types.map((t) => {
        const d = figures.feedback_delay[t];
        const stats = el(
          "dl",
          { class: "stats" },
          ...[
            ["count", "events", fmtCount(d.count), d.count],
            ["p50_s", "p50", fmtDelay(d.p50_s), d.p50_s],
            ["p90_s", "p90", fmtDelay(d.p90_s), d.p90_s],
            ["p99_s", "p99", fmtDelay(d.p99_s), d.p99_s],
            ["max_s", "max", fmtDelay(d.max_s), d.max_s],
          ].flatMap(([f, label, text, v]) => [el("dt", {}, label), el("dd", {}, figure(`feedback_delay.${t}.${f}`, v, text, "delay"))]),
        );
        const late = figures.late_events_by_type[t] || 0;
        return el(
          "article",
          { class: "delay", "data-event-type": t },
          el("h3", {}, t, late ? el("small", { class: "warn-text" }, ` · ${late} too late`) : ""),
          stats,
          histogramChart(d),
        );
      }),
    );
  }

  function renderTrend(figures, granularity) {
    $("trend-unit").textContent = granularity === "hour" ? "served hour" : "served day";
    const points = figures.trend || [];
    if (!points.length) {
      $("trend").replaceChildren(el("p", { class: "empty" }, "Nothing served in this range."));
      return;
    }
    const label = (iso) => (granularity === "hour" ? iso.slice(11, 16) : iso.slice(5, 10));
    const periods = points.map((p) => label(p.start));
    const types = [...new Set(points.flatMap((p) => Object.keys(p.feedback_delay)))].sort();
    const charts = [];
    for (const t of types) {
      const series = MARKS.map(([f, name, cls]) => ({
        name,
        cls,
        values: points.map((p) => (p.feedback_delay[t] ? p.feedback_delay[t][f] : null)),
      }));
      charts.push(
        el(
          "article",
          { class: "trend", "data-event-type": t },
          el("h3", {}, `${t}: delay quantiles`),
          lineChart(periods, series, { log: true, fmt: fmtDelay, title: `${t} delay by period` }),
          legend(MARKS.map(([, name, cls]) => [cls, name])),
        ),
      );
    }
    charts.push(
      el(
        "article",
        { class: "trend" },
        el("h3", {}, "Served, labeled, pending"),
        lineChart(
          periods,
          [
            { name: "served", cls: "s-served", values: points.map((p) => p.served) },
            { name: "labeled", cls: "s-labeled", values: points.map((p) => p.labeled) },
            { name: "pending", cls: "s-pending", values: points.map((p) => p.pending) },
          ],
          { title: "counts by period" },
        ),
        legend([
          ["s-served", "served"],
          ["s-labeled", "labeled"],
          ["s-pending", "pending"],
        ]),
      ),
      el(
        "article",
        { class: "trend" },
        el("h3", {}, "Coverage, revisions, too late"),
        lineChart(periods, [{ name: "coverage", cls: "s-coverage", values: points.map((p) => p.coverage) }], {
          fmt: fmtPct,
          title: "coverage by period",
        }),
        el(
          "table",
          { class: "mini" },
          el("tr", {}, el("th", {}, "period"), el("th", {}, "revisions"), el("th", {}, "too late")),
          ...points
            .filter((p) => p.revisions || p.late_events)
            .map((p) => el("tr", {}, el("td", {}, fmtTime(p.start)), el("td", {}, fmtCount(p.revisions)), el("td", {}, fmtCount(p.late_events)))),
        ),
      ),
    );
    $("trend").replaceChildren(...charts);
  }

  // The advice target typed in the panel, or null when it is not a rate strictly between 0 and 1.
  function adviceTarget() {
    const v = Number($("advice-target").value);
    return $("advice-target").value !== "" && v > 0 && v < 1 ? v : null;
  }

  function renderAdvice(useCase, advice) {
    if (!advice) {
      $("advice-summary").replaceChildren(el("span", { class: "warn-text" }, "The target is a rate strictly between 0 and 1, e.g. 0.02."));
      $("advice").replaceChildren();
      return;
    }
    const types = Object.keys(advice.event_types).sort();
    const seen = types.filter((t) => advice.event_types[t].sample.positives > 0);
    const unmet = seen.filter((t) => !advice.event_types[t].advised);
    const target = fmtPct(advice.max_fake_negative_rate);
    const now = figure("advice.current_window_s", advice.current_window_s, fmtDelay(advice.current_window_s), "advice");
    const advised = figure("advice.window_s", advice.window_s, fmtDelay(advice.window_s), "advice");
    let verdict;
    if (!seen.length) verdict = "No events yet to advise from.";
    else if (unmet.length) verdict = `no window up to the horizon meets it for ${unmet.join(", ")}.`;
    else if (advice.window_s === advice.current_window_s) verdict = "the current window already is the shortest that does.";
    else verdict = advice.window_s < advice.current_window_s ? "shorter than now: labels come sooner." : "longer than now: fewer fake negatives, labels later.";
    $("advice-summary").replaceChildren(
      `${useCase}: window now `, now, `. For at most ${target} fake negatives in every event type seen, the advised window is `, advised, ` — ${verdict}`,
    );
    const charts = seen.map((t) => {
      const a = advice.event_types[t];
      const stats = el(
        "dl",
        { class: "stats" },
        ...[
          ["positives", "events", a.sample.positives, fmtCount(a.sample.positives)],
          ["horizon_s", "horizon", a.horizon_s, fmtDelay(a.horizon_s)],
          ["advised_s", "advised", a.advised?.window_s, fmtDelay(a.advised?.window_s)],
          ["current_rate", "fake neg. now", a.current?.fake_negative_rate, fmtPct(a.current?.fake_negative_rate)],
          ["advised_wait_s", "median label wait", a.advised?.median_label_wait_s, fmtDelay(a.advised?.median_label_wait_s)],
        ].flatMap(([f, label, v, text]) => [el("dt", {}, label), el("dd", {}, figure(`advice.${t}.${f}`, v, text, "advice"))]),
      );
      const outside = a.current ? "" : ` · now (${fmtDelay(advice.current_window_s)}) is beyond the horizon`;
      const marks = [
        [advice.current_window_s, "now", "mark-current"],
        [a.advised?.window_s ?? null, "advised", "mark-advised"],
      ];
      return el(
        "article",
        { class: "advice", "data-event-type": t },
        el("h3", {}, t, el("small", {}, outside)),
        stats,
        adviceChart(a.curve, advice.max_fake_negative_rate, marks, `${t}: fake-negative rate by window`),
        legend([
          ["s-fnr", "fake negatives"],
          ["mark-current", "current window"],
          ["mark-advised", "advised window"],
          ["mark-target", `target ${target}`],
        ]),
      );
    });
    const silent = types.filter((t) => !seen.includes(t));
    if (silent.length) charts.push(el("p", { class: "empty" }, `No events yet of ${silent.join(", ")}: nothing to estimate.`));
    $("advice").replaceChildren(...charts);
  }

  function renderModels(rows, sel) {
    if (!rows.length) {
      $("models").replaceChildren(el("p", { class: "empty" }, "No predictions in this range."));
      return;
    }
    const head = ["model", "version", "served", "labeled", "coverage", "pending", ...KINDS.map((k) => k.replace("_", " "))];
    const table = el("table", { class: "models" }, el("tr", {}, ...head.map((h) => el("th", {}, h))));
    for (const r of rows) {
      const selected = (!sel.model || r.model === sel.model) && (!sel.model_version || r.model_version === sel.model_version);
      table.append(
        el(
          "tr",
          { class: selected && (sel.model || sel.model_version) ? "selected" : null, "data-model": r.model ?? "", "data-model-version": r.model_version ?? "" },
          el("td", {}, r.model ?? "(none)"),
          el("td", {}, r.model_version ?? "(none)"),
          el("td", {}, figure("served", r.served, fmtCount(r.served), "model-row")),
          el("td", {}, fmtCount(r.labeled)),
          el("td", {}, fmtPct(r.coverage)),
          el("td", {}, fmtCount(r.pending)),
          ...KINDS.map((k) => el("td", {}, fmtCount(r.labels_by_kind[k]))),
        ),
      );
    }
    $("models").replaceChildren(table);
  }

  function renderPipeline(p) {
    const facts = el(
      "dl",
      { class: "facts" },
      el("dt", {}, "mode"),
      el("dd", {}, figure("mode", p.mode, p.mode, "pipeline")),
      el("dt", {}, "watermark"),
      el("dd", {}, figure("watermark", p.watermark, fmtTime(p.watermark), "pipeline")),
      el("dt", {}, "lag behind the wall clock"),
      el("dd", {}, figure("watermark_lag_s", p.watermark_lag_s, fmtDelay(p.watermark_lag_s), "pipeline")),
    );
    if (p.mode === "embedded") {
      facts.append(
        el("dt", {}, "newest event time"),
        el("dd", {}, fmtTime(p.max_event_time)),
        el("dt", {}, "last arrival"),
        el("dd", {}, fmtTime(p.last_arrival_at)),
      );
    } else {
      facts.append(el("dt", {}, "partitions not read to their end"), el("dd", {}, figure("partitions_behind", p.partitions_behind, fmtCount(p.partitions_behind), "pipeline")));
    }
    facts.append(el("dt", {}, "dead letters"), el("dd", {}, figure("dead_letters", p.dead_letters, fmtCount(p.dead_letters), "pipeline")));
    const parts = [facts];
    if (p.mode === "kafka") {
      const t = el(
        "table",
        { class: "mini" },
        el("tr", {}, ...["partition", "read to end", "event-time lag", "last report"].map((h) => el("th", {}, h))),
      );
      for (const q of p.partitions) {
        t.append(
          el(
            "tr",
            { class: q.caught_up ? null : "behind" },
            el("td", {}, q.partition),
            el("td", {}, q.caught_up ? "yes" : "no"),
            el("td", {}, fmtDelay(q.watermark_lag_s)),
            el("td", {}, q.since_report_s === null ? "never" : `${fmtDelay(q.since_report_s)} ago`),
          ),
        );
      }
      parts.push(el("h3", {}, "Consumer progress per partition"), t);
    }
    if (p.recent_dead_letters.length) {
      const t = el("table", { class: "mini" }, el("tr", {}, ...["recorded", "source", "reason"].map((h) => el("th", {}, h))));
      for (const d of p.recent_dead_letters) {
        t.append(el("tr", {}, el("td", {}, fmtTime(d.recorded_at)), el("td", {}, `${d.topic}[${d.partition}]@${d.offset}`), el("td", {}, d.reason)));
      }
      parts.push(el("h3", {}, "Latest dead letters"), t);
    }
    $("pipeline").replaceChildren(...parts);
  }

  // -- one refresh ------------------------------------------------------------------------------

  async function load() {
    if (state.inFlight) return;
    state.inFlight = true;
    document.body.dataset.state = "loading";
    try {
      let sel = selection();
      const range = { since: sel.since, until: sel.until };
      const loop = await getJSON("v1/metrics/feedback-loop", { use_case: sel.use_case, ...range, trend: sel.trend });
      const useCases = Object.keys(loop.use_cases).sort();
      if (!sel.use_case || !useCases.includes(sel.use_case)) {
        // First load (all use cases): pick the busiest, then ask again for it alone.
        const select = $("f-use-case");
        select.replaceChildren(...useCases.map((u) => el("option", { value: u }, u)));
        const busiest = useCases.reduce((a, b) => (loop.use_cases[b].served > loop.use_cases[a].served ? b : a), useCases[0]);
        select.value = busiest;
        state.inFlight = false;
        return await load();
      }
      const target = adviceTarget();
      const [models, pipeline, advice] = await Promise.all([
        getJSON("v1/metrics/models", { use_case: sel.use_case, ...range }),
        getJSON("v1/metrics/pipeline", {}),
        target && getJSON("v1/advice/window", { use_case: sel.use_case, max_fake_negative_rate: target }),
      ]);
      const rows = models.use_cases[sel.use_case] || [];
      setOptions($("f-model"), [...new Set(rows.map((r) => r.model).filter((m) => m !== null))].sort(), "all models");
      const versions = rows.filter((r) => !$("f-model").value || r.model === $("f-model").value).map((r) => r.model_version);
      setOptions($("f-version"), [...new Set(versions.filter((v) => v !== null))].sort(), "all versions");
      sel = selection();
      const figures = loop.use_cases[sel.use_case];
      const shown = rows.filter((r) => (!sel.model || r.model === sel.model) && (!sel.model_version || r.model_version === sel.model_version));
      let modelRow = null;
      let modelLabel = "";
      if (sel.model || sel.model_version) {
        modelLabel = `Model ${sel.model || "any"} · version ${sel.model_version || "any"}`;
        modelRow = { labels_by_kind: Object.fromEntries(KINDS.map((k) => [k, shown.reduce((a, r) => a + r.labels_by_kind[k], 0)])) };
        const note = $("model-note");
        note.textContent =
          `${modelLabel}: only the label mix and the per-model table are filtered (counted from the stored predictions). ` +
          "The store keeps delay histograms, revisions, too-late events and the trend per use case, event type and served hour, " +
          "with no model dimension: those panels show every model of the use case.";
        note.hidden = false;
      } else {
        $("model-note").hidden = true;
      }
      renderSummary(sel.use_case, figures, pipeline);
      renderMix(figures, modelRow, modelLabel);
      renderDelays(figures);
      renderTrend(figures, loop.trend_granularity);
      renderAdvice(sel.use_case, advice);
      renderModels(rows, sel);
      renderPipeline(pipeline);
      const hours = loop.served_hours;
      $("status").textContent =
        `${sel.use_case}: predictions served ${hours.from ? fmtTime(hours.from) : "since the start"} to ${hours.to ? fmtTime(hours.to) : "now"} · updated ${new Date().toLocaleTimeString()}`;
      $("status").className = "";
      // What this render shows, for whoever checks it against the API (tests/e2e/test_dashboard.py).
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries({ use_case: sel.use_case, ...range, trend: sel.trend })) if (v) query.set(k, v);
      document.body.dataset.query = query.toString();
      document.body.dataset.model = JSON.stringify({ model: sel.model, model_version: sel.model_version });
      document.body.dataset.state = "ready";
    } catch (err) {
      if (err instanceof NeedsKey) {
        state.inFlight = false;
        await askForKey(err.message);
        return await load();
      }
      $("status").textContent = `Could not refresh: ${err.message}`;
      $("status").className = "error";
      document.body.dataset.state = "error";
    } finally {
      state.inFlight = false;
      state.renders += 1;
      document.body.dataset.renders = String(state.renders);
    }
  }

  function schedule() {
    clearInterval(state.timer);
    const seconds = Number($("f-refresh").value);
    if (seconds > 0) state.timer = setInterval(() => document.hidden || load(), seconds * 1000);
  }

  function init() {
    $("forget-key").hidden = !key();
    const now = hourFloor(Date.now());
    $("f-to").value = toLocalInput(new Date(now.getTime() + 3600e3));
    $("f-from").value = toLocalInput(new Date(now.getTime() - 23 * 3600e3));
    const custom = () => document.body.classList.toggle("custom-range", $("f-range").value === "custom");
    for (const id of ["f-use-case", "f-range", "f-from", "f-to", "f-trend", "f-version", "advice-target"]) {
      $(id).addEventListener("change", () => {
        custom();
        load();
      });
    }
    $("f-model").addEventListener("change", () => {
      $("f-version").value = "";
      load();
    });
    $("f-refresh").addEventListener("change", schedule);
    $("refresh-now").addEventListener("click", load);
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      $("forget-key").hidden = true;
      load();
    });
    for (const id of ["filters", "advice-form"]) $(id).addEventListener("submit", (e) => e.preventDefault());
    custom();
    schedule();
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
