// TweetPulse live dashboard: renders /api/snapshot and every `snapshot` server-sent event as SVG.
// No libraries (the page must work without internet): charts are drawn as SVG strings.
"use strict";

const SPARK_MINUTES = 30;
const fmtInt = new Intl.NumberFormat("en-US");
const fmt1 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1, minimumFractionDigits: 1 });
let lastTotal = null;
let seenIds = new Set();

const $ = (sel) => document.querySelector(sel);

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function hhmm(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function hhmmss(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function pct(share) {
  return share === null || share === undefined ? "–" : `${Math.round(share * 100)}%`;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value >= 10000 ? `${fmt1.format(value / 1000)} s` : `${fmtInt.format(Math.round(value))} ms`;
}

// A "nice" axis maximum (1, 2, 5 × 10^n per tick, at least 1) at or above `value`, and its tick step.
function niceScale(value, ticks = 4) {
  const raw = Math.max(value, 1) / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw));  // counts: whole ticks
  return { max: step * ticks, step };
}

function size(svg) {
  const box = svg.getBoundingClientRect();
  const width = Math.max(200, Math.round(box.width));
  const height = Math.max(60, Math.round(box.height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  return { width, height };
}

function setTile(id, text, cls) {
  const el = $(`#${id} .value`);
  if (el.textContent !== text) {
    el.textContent = text;
  }
  el.classList.remove("good", "warn", "bad");
  if (cls) el.classList.add(cls);
}

function renderTiles(s) {
  const total = s.totals.count;
  setTile("tile-total", fmtInt.format(total));
  if (lastTotal !== null && total > lastTotal) {
    const el = $("#tile-total .value");
    el.classList.add("bump");
    setTimeout(() => el.classList.remove("bump"), 450);
  }
  lastTotal = total;
  $("#total-pos").textContent = fmtInt.format(s.totals.positive);
  $("#total-neg").textContent = fmtInt.format(s.totals.negative);

  const share = s.window.positive_share;
  setTile("tile-share", pct(share), share === null ? null : share >= 0.5 ? "good" : "bad");
  $("#share-sub").textContent = s.window.count
    ? `of ${fmtInt.format(s.window.count)} in the last ${s.window_minutes} min`
    : `no tweets in the last ${s.window_minutes} min`;
  $("#tile-share .meter-pos").style.width = share === null ? "0" : `${share * 100}%`;

  setTile("tile-rate", fmt1.format(s.throughput.per_s_10s));
  $("#rate-60").textContent = fmt1.format(s.throughput.per_s_60s);

  const lag = s.lag;
  if (!lag) {
    setTile("tile-lag", "–");
    $("#lag-sub").textContent = "measuring…";
  } else if (lag.error) {
    setTile("tile-lag", "?", "warn");
    $("#lag-sub").textContent = lag.error;
  } else if (lag.total === null) {
    setTile("tile-lag", "–");
    $("#lag-sub").textContent = `group ${lag.group} has not committed yet`;
  } else {
    setTile("tile-lag", fmtInt.format(lag.total), lag.total > 10000 ? "bad" : lag.total > 1000 ? "warn" : "good");
    $("#lag-sub").textContent = `${lag.group} · ${lag.committed_partitions} partitions`;
  }

  const lat = s.latency_ms;
  setTile("tile-latency", ms(lat.p95));
  $("#latency-sub").textContent = `p50 ${ms(lat.p50)} · ingest → result`;

  const model = s.model;
  setTile("tile-model", model.version || "–");
  const parts = [];
  if (model.announced) parts.push(`production: ${model.announced}`);
  if (model.seen_in_results && model.announced && model.seen_in_results !== model.announced) {
    parts.push("rolling out");
  }
  $("#model-sub").textContent = parts.join(" · ") || (model.version ? "from results" : "no results yet");
  $("#training-sub").textContent = model.training || "";
}

function renderMinuteChart(s) {
  const svg = $("#minute-chart");
  const { width, height } = size(svg);
  const pad = { left: 40, right: 40, top: 12, bottom: 26 };
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const minutes = s.minutes;
  const peak = Math.max(0, ...minutes.map((m) => m.positive + m.negative));
  const { max, step } = niceScale(peak);
  const slot = innerW / minutes.length;
  const barW = Math.max(2, slot * 0.72);
  const y = (v) => pad.top + innerH - (v / max) * innerH;
  const parts = [];
  for (let v = 0; v <= max; v += step) {
    parts.push(`<line class="grid-line" x1="${pad.left}" x2="${width - pad.right}" y1="${y(v)}" y2="${y(v)}"/>`);
    parts.push(`<text x="${pad.left - 8}" y="${y(v) + 4}" text-anchor="end">${fmtInt.format(v)}</text>`);
  }
  for (const share of [0, 0.5, 1]) {
    const yy = pad.top + innerH - share * innerH;
    parts.push(`<text x="${width - pad.right + 8}" y="${yy + 4}">${share * 100}%</text>`);
  }
  const labelEvery = Math.max(1, Math.ceil(minutes.length / Math.max(2, Math.floor(innerW / 70))));
  const line = [];
  minutes.forEach((m, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    const total = m.positive + m.negative;
    if ((minutes.length - 1 - i) % labelEvery === 0) {
      parts.push(`<text x="${x + barW / 2}" y="${height - 8}" text-anchor="middle">${hhmm(m.t)}</text>`);
    }
    if (total === 0) return;
    const negH = (m.negative / max) * innerH;
    const posH = (m.positive / max) * innerH;
    const base = pad.top + innerH;
    parts.push(
      `<g class="bar" data-minute="${m.t}"><title>${hhmm(m.t)}: ${m.positive} positive, ${m.negative} negative</title>` +
        `<rect class="bar-neg" x="${x}" y="${base - negH}" width="${barW}" height="${negH}" rx="2"/>` +
        `<rect class="bar-pos" x="${x}" y="${base - negH - posH}" width="${barW}" height="${posH}" rx="2"/></g>`
    );
    line.push([x + barW / 2, pad.top + innerH - (m.positive / total) * innerH]);
  });
  if (line.length > 1) {
    parts.push(`<polyline class="share-line" points="${line.map((p) => p.join(",")).join(" ")}"/>`);
  }
  for (const [px, py] of line) parts.push(`<circle class="share-dot" cx="${px}" cy="${py}" r="2.5"/>`);
  if (peak === 0) {
    parts.push(`<text x="${width / 2}" y="${pad.top + innerH / 2}" text-anchor="middle">Waiting for tweets…</text>`);
  }
  svg.innerHTML = parts.join("");
}

function renderThroughput(s) {
  const svg = $("#throughput-chart");
  const { width, height } = size(svg);
  const pad = { left: 34, right: 8, top: 10, bottom: 18 };
  const series = s.throughput.per_second;
  const { max, step } = niceScale(Math.max(...series), 2);
  const innerW = width - pad.left - pad.right;
  const innerH = height - pad.top - pad.bottom;
  const x = (i) => pad.left + (i / (series.length - 1)) * innerW;
  const y = (v) => pad.top + innerH - (v / max) * innerH;
  const parts = [];
  for (let v = 0; v <= max; v += step) {
    parts.push(`<line class="grid-line" x1="${pad.left}" x2="${width - pad.right}" y1="${y(v)}" y2="${y(v)}"/>`);
    parts.push(`<text x="${pad.left - 6}" y="${y(v) + 4}" text-anchor="end">${fmtInt.format(v)}</text>`);
  }
  const points = series.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
  parts.push(`<path class="spark-area" d="M${x(0)},${y(0)} L${points.join(" L")} L${x(series.length - 1)},${y(0)} Z"/>`);
  parts.push(`<polyline class="spark-line" points="${points.join(" ")}"/>`);
  const last = series.length - 1;
  parts.push(`<circle class="now" cx="${x(last)}" cy="${y(series[last])}" r="3.5"/>`);
  parts.push(`<text x="${pad.left}" y="${height - 3}">−2 min</text>`);
  parts.push(`<text x="${width - pad.right}" y="${height - 3}" text-anchor="end">now</text>`);
  svg.innerHTML = parts.join("");
}

function renderMix(s) {
  const svg = $("#mix-chart");
  const { width } = size(svg);
  const { positive, negative, count } = s.window;
  const posW = count ? (positive / count) * width : width / 2;
  const muted = count ? "" : ' opacity="0.25"';
  svg.innerHTML =
    `<rect x="0" y="6" width="${posW}" height="26" rx="6" fill="var(--pos)"${muted}/>` +
    `<rect x="${posW}" y="6" width="${width - posW}" height="26" rx="6" fill="var(--neg)"${muted}/>` +
    `<text x="0" y="54" fill="var(--pos)">${fmtInt.format(positive)} positive</text>` +
    `<text x="${width}" y="54" fill="var(--neg)" text-anchor="end">${fmtInt.format(negative)} negative</text>`;
  $("#malformed").textContent = s.malformed ? `${fmtInt.format(s.malformed)} malformed results skipped` : "";
}

function sparkbars(minutes) {
  const series = minutes.slice(-SPARK_MINUTES);
  const peak = Math.max(1, ...series.map((m) => m.positive + m.negative));
  const w = 120;
  const h = 26;
  const slot = w / series.length;
  const bars = series.map((m, i) => {
    const negH = (m.negative / peak) * h;
    const posH = (m.positive / peak) * h;
    const x = (i * slot + 0.5).toFixed(1);
    const bw = Math.max(1, slot - 1).toFixed(1);
    return (
      `<rect x="${x}" y="${h - negH}" width="${bw}" height="${negH}" fill="var(--neg)"/>` +
      `<rect x="${x}" y="${h - negH - posH}" width="${bw}" height="${posH}" fill="var(--pos)"/>`
    );
  });
  return `<svg class="sparkbars" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">${bars.join("")}</svg>`;
}

function renderTags(s) {
  const rows = s.tags.map((t) => {
    const share = t.positive_share ?? 0;
    return (
      `<tr data-tag="${escapeHtml(t.tag)}"><td class="tag" title="${escapeHtml(t.tag)}">${escapeHtml(t.tag)}</td>` +
      `<td class="num">${fmtInt.format(t.count)}</td>` +
      `<td><div class="split"><div class="split-bar"><span style="width:${share * 100}%"></span></div>` +
      `<span class="pct">${pct(t.positive_share)}</span></div></td>` +
      `<td>${sparkbars(t.minutes)}</td></tr>`
    );
  });
  $("#tags tbody").innerHTML = rows.join("");
  $("#tags-empty").style.display = rows.length ? "none" : "block";
}

function renderLatest(s) {
  const fresh = new Set();
  const rows = s.latest.map((t) => {
    const isNew = seenIds.size > 0 && !seenIds.has(t.id);
    fresh.add(t.id);
    const conf = Math.round(t.confidence * 100);
    return (
      `<tr class="${t.label}${isNew ? " fresh" : ""}" data-id="${escapeHtml(t.id)}">` +
      `<td>${hhmmss(t.classified_at)}</td>` +
      `<td><span class="label ${t.label}">${t.label} ${conf}% <span class="conf"><span style="width:${conf}%"></span></span></span></td>` +
      `<td><span class="chip">${escapeHtml(t.tag)}</span></td>` +
      `<td class="text">${escapeHtml(t.text)}</td>` +
      `<td class="num">${ms(t.latency_ms)}</td></tr>`
    );
  });
  seenIds = fresh.size ? fresh : seenIds;
  $("#latest tbody").innerHTML = rows.join("");
  $("#latest-empty").style.display = rows.length ? "none" : "block";
  $("#latest-count").textContent = rows.length ? `newest ${rows.length}` : "";
}

function render(s) {
  document.body.dataset.sequence = s.sequence;
  renderTiles(s);
  renderMinuteChart(s);
  renderThroughput(s);
  renderMix(s);
  renderTags(s);
  renderLatest(s);
  $("#clock").textContent = `updated ${hhmmss(s.now)}`;
}

function setStatus(live) {
  const el = $("#status");
  el.className = `pill ${live ? "live" : "offline"}`;
  el.querySelector(".text").textContent = live ? "live" : "reconnecting";
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("snapshot", (event) => {
    setStatus(true);
    render(JSON.parse(event.data));
  });
  source.onerror = () => setStatus(false);  // EventSource reconnects by itself
}

fetch("/api/snapshot")
  .then((r) => r.json())
  .then(render)
  .catch(() => setStatus(false));
connect();
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => fetch("/api/snapshot").then((r) => r.json()).then(render), 150);
});
