// The GraphQL client over HTTP, shared by the dashboard and the console:
// `gql()` posts one operation to `/graphql` and turns GraphQL and network
// failures into an `ApiError` with the server's `extensions.code`, so pages
// can say what to do about each. The session (token, expiry, user) lives in
// sessionStorage, so it dies with the tab; each page keeps its own.

export class ApiError extends Error {
  constructor(message, code, extensions = {}) {
    super(message);
    this.code = code;
    this.extensions = extensions;
  }
}

/** Posts `query` with `variables`; returns `data` or throws an `ApiError`. */
export async function gql(query, variables = {}, token = null) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  } catch {
    throw new ApiError("Can't reach the Rollcall server. Check the network and try again.", "NETWORK");
  }
  let body;
  try {
    body = await resp.json();
  } catch {
    throw new ApiError(`The server answered HTTP ${resp.status} with no GraphQL body.`, "INTERNAL");
  }
  if (body.errors?.length) {
    const e = body.errors[0];
    throw new ApiError(e.message, e.extensions?.code ?? "INTERNAL", e.extensions ?? {});
  }
  return body.data;
}

/** Exchanges e-mail and password for a session `{ token, expiresAt, user }`. */
export async function logIn(email, password) {
  const data = await gql(
    `mutation LogIn($email: String!, $password: String!) {
       logIn(email: $email, password: $password) { token expiresAt user { id name role } }
     }`,
    { email, password },
  );
  return { token: data.logIn.token, expiresAt: data.logIn.expiresAt, user: data.logIn.user };
}

/** What to tell someone whose log-in failed with `error`. */
export function logInMessage(error) {
  const messages = {
    UNAUTHENTICATED: "Wrong e-mail or password.",
    RATE_LIMITED: "Too many attempts. Wait a moment and try again.",
  };
  return messages[error.code] ?? error.message;
}

/** The session saved under `key`, or `null` when there is none (or it is unreadable). */
export function readSession(key) {
  try {
    const s = JSON.parse(sessionStorage.getItem(key) ?? "null");
    return s?.token && s?.expiresAt ? s : null;
  } catch {
    return null;
  }
}

export function saveSession(key, session) {
  sessionStorage.setItem(key, JSON.stringify(session));
}

export function forgetSession(key) {
  sessionStorage.removeItem(key);
}

/** The `/graphql` WebSocket URL on this origin. */
export function socketUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
}
