// The dashboard: asks for a key once, then polls the API every 2 s until the key is refused.
import { AuthError, apiKey, getJson } from "./api.js";
import { setText, show } from "./dom.js";
import {
  renderHistory,
  renderQueue,
  renderRunning,
  renderSummary,
  renderWorkers,
} from "./views.js";

const POLL_MS = 2000;
const RUNNING = "api/v1/operations?status=running&limit=200";
const HISTORY = "api/v1/operations?status=completed&status=failed&status=cancelled&limit=25";

const login = document.getElementById("login");
const dashboard = document.getElementById("dashboard");
const forget = document.getElementById("forget");
const authError = document.getElementById("auth-error");
const keyInput = document.getElementById("key");

let generation = 0; // a poll of an earlier key neither renders nor schedules the next one
let timer = null;

async function refresh(current) {
  // alone first: a refused key costs one failed attempt, not four
  const stats = await getJson("api/v1/stats");
  const [workers, running, history] = await Promise.all([
    getJson("api/v1/workers"),
    getJson(RUNNING),
    getJson(HISTORY),
  ]);
  if (current !== generation) {
    return;
  }
  renderSummary(stats);
  renderQueue(stats);
  renderWorkers(workers.items, stats.at);
  renderRunning(running.items, stats.at);
  renderHistory(history.items, stats.at);
  show(login, false);
  show(dashboard, true);
  show(forget, true);
  setText("status", `updated ${new Date().toLocaleTimeString()}`);
}

async function poll(current) {
  try {
    await refresh(current);
  } catch (error) {
    if (current !== generation) {
      return;
    }
    if (error instanceof AuthError) {
      disconnect(error.message);
      return;
    }
    setText("status", `cannot reach the backend (${error.message}); retrying`);
  }
  if (current === generation) {
    timer = setTimeout(() => poll(current), POLL_MS);
  }
}

function disconnect(message) {
  generation += 1;
  clearTimeout(timer);
  apiKey.forget();
  authError.textContent = message ?? "";
  show(authError, Boolean(message));
  show(dashboard, false);
  show(forget, false);
  show(login, true);
  setText("status", "not connected");
  keyInput.focus();
}

function connect(key) {
  generation += 1;
  clearTimeout(timer);
  apiKey.set(key);
  show(authError, false);
  setText("status", "connecting…");
  poll(generation);
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  keyInput.value = "";
  connect(key);
});
forget.addEventListener("click", () => disconnect(null));

if (apiKey.get() === null) {
  disconnect(null);
} else {
  connect(apiKey.get());
}
