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

/** One page of a room's history, ascending by seq: {room, messages, more}. */
export function roomMessages(room, { before, after, limit = 50 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (before != null) query.set("before", String(before));
  if (after != null) query.set("after", String(after));
  return call("GET", `/api/rooms/${encodeURIComponent(room)}/messages?${query}`);
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
