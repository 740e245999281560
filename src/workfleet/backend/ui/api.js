// Reads of the backend API with the viewer's key. The key lives in sessionStorage (this tab,
// until it closes): never in the URL, never in localStorage.

const KEY_NAME = "workfleet.apiKey";

export class AuthError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_NAME),
  set: (key) => sessionStorage.setItem(KEY_NAME, key),
  forget: () => sessionStorage.removeItem(KEY_NAME),
};

const AUTH_MESSAGES = {
  401: "401: the key was refused (wrong, revoked, or missing).",
  403: "403: this key's role may not read the fleet; a viewer key or higher is needed.",
  429: "429: too many failed attempts from this address; wait a minute and try again.",
};

// `path` is relative ("api/v1/workers"), so the page also works behind a path prefix.
export async function getJson(path) {
  const headers = { Accept: "application/json" };
  const key = apiKey.get();
  if (key) {
    headers.Authorization = `Bearer ${key}`;
  }
  const response = await fetch(path, {
    headers,
    cache: "no-store",
    redirect: "error",
    referrerPolicy: "no-referrer",
  });
  if (response.status in AUTH_MESSAGES) {
    throw new AuthError(response.status, AUTH_MESSAGES[response.status]);
  }
  if (!response.ok) {
    throw new Error(`${path}: HTTP ${response.status}`);
  }
  return response.json();
}
