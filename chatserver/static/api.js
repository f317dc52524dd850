// The HTTP API (PROTOCOL section 7). The session is the HttpOnly `chat_session` cookie, which
// the browser sends by itself on same-origin requests; nothing here sees the token.

/** A non-2xx answer: `code` and `message` come from the JSON error body when there is one. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetchJson(path, init);
}

/** The JSON body of a 2xx answer; otherwise an ApiError with the server's reason. */
async function fetchJson(path, init) {
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "the server cannot be reached");
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const code = data?.error ?? "http_" + response.status;
    const message = data?.message ?? `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, code, message);
  }
  return data;
}

export const login = (username, password) => call("POST", "/api/login", { username, password });
export const logout = () => call("POST", "/api/logout", {});
export const me = () => call("GET", "/api/me");
export const listRooms = async () => (await call("GET", "/api/rooms")).rooms;
export const createRoom = (name, isPrivate) =>
  call("POST", "/api/rooms", { name, private: isPrivate });
export const openDirect = (user) => call("POST", "/api/direct", { user });

/**
 * One page of a room's history, ascending by seq: {room, messages, more}. With `thread` (a
 * root's seq), that thread's replies only.
 */
export function roomMessages(room, { before, after, limit = 50, thread } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before != null) query.set("before", String(before));
  if (after != null) query.set("after", String(after));
  if (thread != null) query.set("thread", String(thread));
  return call("GET", `/api/rooms/${encodeURIComponent(room)}/messages?${query}`);
}

/** A page of search results: {results: [{room, seq, thread, user, ts, snippet}], next}. */
export function searchMessages(q, { room, before, limit = 20 } = {}) {
  const query = new URLSearchParams({ q, limit: String(limit) });
  if (room) query.set("room", room);
  if (before) query.set("before", before);
  return call("GET", `/api/search?${query}`);
}

/** Upload a file as a message (multipart; the browser sets the boundary): the message. */
export async function uploadFile(room, file, { text = "", thread = null } = {}) {
  const form = new FormData();
  form.append("file", file, file.name);
  if (text) form.append("text", text);
  if (thread != null) form.append("thread", String(thread));
  return fetchJson(`/api/rooms/${encodeURIComponent(room)}/files`, {
    method: "POST", credentials: "same-origin", headers: { Accept: "application/json" },
    body: form,
  });
}

/** Who of a room's members is online now: {room, online: [names], truncated?}. */
export const roomPresence = (room) =>
  call("GET", `/api/rooms/${encodeURIComponent(room)}/presence`);

/** true: signed in; false: the session is gone (401); null: cannot tell (server down). */
export async function sessionValid() {
  try {
    await me();
    return true;
  } catch (error) {
    return error.status === 401 ? false : null;
  }
}
