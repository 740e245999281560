// The page's sections, rebuilt from the API's answers on every poll. Relative times are taken
// against the backend's clock (`now`, from /api/v1/stats), so a skewed browser clock is harmless.
import { drawMinutes } from "./chart.js";
import { ago, duration, el, percent, seconds, setText } from "./dom.js";

const STATE_LABELS = { temporarily_unavailable: "unavailable" };
const expanded = new Set(); // failure details the viewer opened: kept open across polls

export function renderSummary(stats) {
  const states = Object.entries(stats.workers);
  setText("sum-workers", states.reduce((total, [, count]) => total + count, 0));
  setText("sum-states", states.map(([state, n]) => `${n} ${STATE_LABELS[state] ?? state}`).join(" · "));
  setText("sum-capacity", `${stats.slots_used} / ${stats.slots_total} slots`);
  const capacity = document.getElementById("sum-capacity-bar");
  capacity.max = Math.max(1, stats.slots_total);
  capacity.value = stats.slots_used;
  setText("sum-queue", stats.queue_depth);
  setText("sum-running", stats.running);
  setText("sum-throughput", stats.finished_last_hour);
  const ratio = stats.finished_last_hour ? stats.failed_last_hour / stats.finished_last_hour : 0;
  setText("sum-failed", `${stats.failed_last_hour} failed (${percent(ratio)})`);
  drawMinutes(
    document.getElementById("chart-throughput"),
    stats.minutes,
    [
      { value: (m) => m.finished, className: "bar" },
      { value: (m) => m.failed, className: "bar failed" },
    ],
    stats.at,
  );
  drawMinutes(
    document.getElementById("chart-queue"),
    stats.minutes,
    [{ value: (m) => m.queue_depth, className: "bar queue" }],
    stats.at,
  );
}

// What waits now: per priority (highest first) and per submitter (most first, the rest summed),
// each with a bar of its share of the whole queue.
export function renderQueue(stats) {
  setText("sum-placement", stats.placement);
  const total = stats.queue_depth;
  const empty = "Nothing is waiting.";
  fill("queue-priority", empty, stats.queue_by_priority.map((d) =>
    depthRow({ "data-priority": d.priority }, priorityLabel(d.priority), d.queued, total)));
  const submitters = stats.queue_by_submitter.map((d) =>
    depthRow({ "data-submitter": d.submitter }, d.submitter, d.queued, total));
  if (stats.queue_other_submitters > 0) {
    submitters.push(depthRow({ class: "others" }, "all others", stats.queue_other_submitters, total));
  }
  fill("queue-submitters", empty, submitters);
}

function priorityLabel(priority) {
  if (priority === 9) {
    return "9 (highest)";
  }
  return priority === 0 ? "0 (lowest)" : String(priority);
}

function depthRow(attrs, label, queued, total) {
  const bar = el("progress", { max: Math.max(1, total), value: queued });
  return el(
    "tr",
    attrs,
    el("td", {}, label),
    el("td", { class: "count" }, queued),
    el("td", { class: "share", title: percent(total ? queued / total : 0) }, bar),
  );
}

export function renderWorkers(workers, now) {
  fill("workers", "No worker is registered.", workers.map((w) => workerRow(w, now)));
}

export function renderRunning(operations, now) {
  fill("running", "Nothing is running.", operations.map((op) => runningRow(op, now)));
}

export function renderHistory(operations, now) {
  fill("history", "Nothing has finished yet.", operations.map((op) => historyRow(op, now)));
}

function fill(tableId, emptyText, rows) {
  const table = document.getElementById(tableId);
  const columns = table.tHead.rows[0].cells.length;
  const empty = el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText));
  table.tBodies[0].replaceChildren(...(rows.length ? rows : [empty]));
}

function badge(value, label) {
  return el("span", { class: `badge ${value}` }, label ?? value);
}

function operationId(id) {
  return el("code", { class: "id", title: id }, id);
}

function workerRow(w, now) {
  const load = w.load;
  return el(
    "tr",
    { "data-worker-id": w.worker_id },
    el("td", { title: w.endpoint_url }, w.worker_id),
    el("td", {}, w.worker_type),
    el("td", { title: `${w.consecutive_failures} failed health checks in a row` },
      badge(w.status, STATE_LABELS[w.status])),
    el("td", { title: `cpu ${percent(load.cpu_usage_ratio)}, memory ${percent(load.memory_usage_ratio)}` },
      percent(load.current_load)),
    el("td", {}, `${w.running_operations.length} / ${w.capabilities.slots}`),
    el("td", {}, capabilities(w.capabilities)),
    el("td", { title: w.last_healthy_at ?? "" }, ago(w.last_healthy_at, now)),
    el("td", { title: w.unavailable_since ?? "" }, w.unavailable_since ? ago(w.unavailable_since, now) : "—"),
  );
}

function capabilities(c) {
  let gpu = "no GPU";
  if (c.gpu) {
    const memory = c.gpu_memory_gb ? ` ${c.gpu_memory_gb} GB` : "";
    gpu = `${c.gpu_count || 1}× ${c.gpu_type ?? "GPU"}${memory}`;
  }
  return `${c.cores} cores · ${c.memory_gb} GB · ${gpu}`;
}

function runningRow(op, now) {
  const progress = op.progress ?? {};
  const bar = el("progress", { max: 100 });
  let shown = "—";
  if (progress.percentage !== null && progress.percentage !== undefined) {
    bar.value = progress.percentage; // without a value the bar stays indeterminate
    shown = `${Math.round(progress.percentage)} %`;
  }
  return el(
    "tr",
    { "data-operation-id": op.operation_id },
    el("td", {}, operationId(op.operation_id)),
    el("td", {}, op.operation_type),
    el("td", {}, op.worker_id ?? "—"),
    el("td", {}, op.attempt),
    el("td", { class: "progress" }, bar, el("span", {}, shown)),
    el("td", {}, progressMessage(progress)),
    el("td", {}, op.started_at ? duration(seconds(op.started_at, now)) : "starting"),
  );
}

function progressMessage(progress) {
  if (progress.message) {
    return progress.message;
  }
  if (progress.total_steps) {
    return `step ${progress.current_step ?? 0}/${progress.total_steps}`;
  }
  if (progress.items_total) {
    return `${progress.items_done ?? 0}/${progress.items_total} items`;
  }
  return "";
}

function historyRow(op, now) {
  const ran = op.started_at && op.finished_at ? duration(seconds(op.started_at, op.finished_at)) : "—";
  return el(
    "tr",
    { "data-operation-id": op.operation_id },
    el("td", {}, operationId(op.operation_id)),
    el("td", {}, op.operation_type),
    el("td", {}, badge(op.status)),
    el("td", {}, op.worker_id ?? "—"),
    el("td", {}, ran),
    el("td", { title: op.finished_at ?? "" }, op.finished_at ? ago(op.finished_at, now) : "—"),
    el("td", { class: "reason" }, failureReason(op)),
  );
}

function failureReason(op) {
  if (!op.error) {
    return "";
  }
  const reason = `${op.error.type}: ${op.error.message}`;
  if (!op.error.traceback) {
    return reason;
  }
  const id = op.operation_id;
  const details = el("details", {}, el("summary", {}, reason), el("pre", {}, op.error.traceback));
  details.open = expanded.has(id);
  details.addEventListener("toggle", () => {
    if (details.open) {
      expanded.add(id);
    } else {
      expanded.delete(id);
    }
  });
  return details;
}
