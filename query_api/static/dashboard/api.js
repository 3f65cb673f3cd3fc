// Calls to the admin-only query API with the tab's token. A 401 ends the session (the app shows
// the sign-in form again); any other failure becomes an ApiError with the service's message.

const API = new URL("../api/v1/analytics/", document.baseURI);
const TOKEN_KEY = "homepot-analytics.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  keep: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  end: () => sessionStorage.removeItem(TOKEN_KEY),
  onExpired: () => {},
};

// FastAPI's detail: a string, or a list of {loc, msg} for a 422.
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((item) => `${(item.loc || []).slice(1).join(".") || "input"}: ${item.msg}`).join("\n");
  }
  return JSON.stringify(detail);
}

async function call(method, path, params = {}, body = undefined) {
  const url = new URL(path, API);
  for (const [name, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one !== undefined && one !== null && one !== "") url.searchParams.append(name, one);
    }
  }
  const headers = { Authorization: `Bearer ${session.token() || ""}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.ok) return response.json();
  let message = `${response.status} ${response.statusText}`;
  try {
    message = describe((await response.json()).detail);
  } catch (_) {
    // Not JSON (a proxy's page): keep the status line.
  }
  if (response.status === 401) {
    session.end();
    session.onExpired(message);
  }
  throw new ApiError(response.status, message);
}

export const get = (path, params) => call("GET", path, params);
export const patch = (path, params, body) => call("PATCH", path, params, body);
