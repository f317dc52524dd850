"""Cluster-wide presence in Redis: who has a connection open anywhere, surviving crashes.

Keys:

- `chat:presence:user:<user>`: a sorted set of `<instance>:<conn_id>` members, each scored by
  its expiry time. The instance holding the connection pushes the expiry forward every
  ttl/3 (`refresh`); a crashed instance stops doing so and its members expire.
- `chat:presence:deadlines`: a sorted set of users who have members, scored by the latest
  expiry ever given to one of them. The sweeper looks only at users whose deadline passed,
  so a sweep costs what expired, not the number of users online.

`online` reads the same sets without changing them: a user is online while one of their
members is scored after now (an expired member counts as gone before the sweeper removes it).

Every change is one Lua script, so each "first connection" / "last connection" / "expired"
transition is reported exactly once across all instances. Times are the Redis server's clock
(`TIME`), so instances with skewed clocks agree. The sweep script builds key names from the
user names it reads, which is fine on a single Redis (or a primary with replicas) but not on
Redis Cluster. Needs Redis >= 6.2 (`ZADD ... GT`).

Known delay: closing one of two connections does not lower the user's deadline, so when the
other one's instance then crashes, the user goes offline up to one extra ttl later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

USER_KEY_PREFIX = "chat:presence:user:"
DEADLINES_KEY = "chat:presence:deadlines"
REFRESH_CHUNK = 500  # members per script call: bounds how long one call blocks Redis
SWEEP_CHUNK = 500
ONLINE_CHUNK = 500  # users per `online` script call, for the same reason

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: user key, deadlines. ARGV: member, ttl, user. 1 iff the user had no live member.
_OPEN = _NOW + """
local expiry = now + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', expiry, ARGV[3])
if live == 0 then return 1 end
return 0
"""

# KEYS: user key, deadlines. ARGV: member, user. 1 iff this member was the last live one.
# A member already gone (expired and swept) reports 0: the sweeper announced that offline.
_CLOSE = _NOW + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

# KEYS: deadlines, then one user key per member. ARGV: ttl, then member and user per key.
# Returns the users that had no live member before (expired while Redis was unreachable, or
# opened while it was down): they are online again.
_REFRESH = _NOW + """
local expiry = now + tonumber(ARGV[1])
local back = {}
for i = 2, #KEYS do
  local member = ARGV[2 * i - 2]
  local user = ARGV[2 * i - 1]
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) == 0 then table.insert(back, user) end
  redis.call('ZADD', KEYS[i], expiry, member)
  redis.call('ZADD', KEYS[1], 'GT', expiry, user)
end
return back
"""

# KEYS: deadlines. ARGV: user key prefix, limit. Removes expired members of users whose
# deadline passed and returns (once, whichever instance runs it first) those left with none.
_SWEEP = _NOW + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local gone = {}
for _, user in ipairs(due) do
  local key = ARGV[1] .. user
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then
    redis.call('ZREM', KEYS[1], user)
    table.insert(gone, user)
  else
    redis.call('ZADD', KEYS[1], last[2], user)
  end
end
return gone
"""


# KEYS: one user key per user. ARGV: none. 1 or 0 per key: whether it has a live member.
# Read-only: expired members are left for the sweeper, which announces them offline. Live
# means scored above now, the complement of what ZREMRANGEBYSCORE -inf now removes above.
_ONLINE = _NOW + """
local live = {}
for i = 1, #KEYS do
  live[i] = 0
  if redis.call('ZCOUNT', KEYS[i], '(' .. now, '+inf') > 0 then live[i] = 1 end
end
return live
"""


class RedisPresence:
    """This instance's side of cluster presence; every method may raise redis errors.

    It remembers this instance's open connections locally (`local`), so `refresh` can keep
    them alive and re-announce them after an outage, even those opened while Redis was down.
    """

    def __init__(self, redis: Redis, instance_id: str, ttl: float) -> None:
        self.redis = redis
        self.instance_id = instance_id
        self.ttl = ttl
        self.local: dict[str, str] = {}  # member -> user
        self._local_users: Counter[str] = Counter()  # user -> their members in `local`
        self._open = redis.register_script(_OPEN)
        self._close = redis.register_script(_CLOSE)
        self._refresh = redis.register_script(_REFRESH)
        self._sweep = redis.register_script(_SWEEP)
        self._online = redis.register_script(_ONLINE)

    def member(self, conn_id: str) -> str:
        return f"{self.instance_id}:{conn_id}"

    async def opened(self, user: str, conn_id: str) -> bool:
        """Record the connection; True iff the user had no live connection anywhere before."""
        member = self.member(conn_id)
        self._keep(member, user)
        result = await self._open(keys=[USER_KEY_PREFIX + user, DEADLINES_KEY],
                                  args=[member, self.ttl, user])
        return bool(result)

    async def closed(self, user: str, conn_id: str) -> bool:
        """Forget the connection; True iff it was the user's last live one anywhere."""
        member = self.member(conn_id)
        if self._forget(member) is None:
            return False
        return await self._remove(user, member)

    def _keep(self, member: str, user: str) -> None:
        if member not in self.local:
            self._local_users[user] += 1
        self.local[member] = user

    def _forget(self, member: str) -> str | None:
        user = self.local.pop(member, None)
        if user is not None:
            self._local_users[user] -= 1
            if self._local_users[user] <= 0:
                del self._local_users[user]
        return user

    async def _remove(self, user: str, member: str) -> bool:
        result = await self._close(keys=[USER_KEY_PREFIX + user, DEADLINES_KEY],
                                   args=[member, user])
        return bool(result)

    async def refresh(self) -> list[str]:
        """Push this instance's members' expiry forward; return users who are back online.

        A connection that closes while its refresh is in flight could be re-added by it
        (another pooled connection may run the close first): such members are removed again
        afterwards, and users without a local connection any more are not reported.
        """
        snapshot = list(self.local.items())
        back: set[str] = set()
        for start in range(0, len(snapshot), REFRESH_CHUNK):
            chunk = snapshot[start:start + REFRESH_CHUNK]
            keys = [DEADLINES_KEY] + [USER_KEY_PREFIX + user for _, user in chunk]
            args: list[Any] = [self.ttl]
            for member, user in chunk:
                args += [member, user]
            back.update(_strings(await self._refresh(keys=keys, args=args)))
        for member, user in snapshot:
            if member not in self.local:
                await self._remove(user, member)
        return sorted(user for user in back if user in self._local_users)

    async def online(self, users: Sequence[str]) -> set[str]:
        """Which of `users` have a live member anywhere, by Redis's clock: one script call per
        ONLINE_CHUNK users. This instance's own connections count even before Redis has them
        (opened while it was unreachable, not refreshed yet)."""
        here = self._local_users
        found = {user for user in users if user in here}
        ask = list(dict.fromkeys(user for user in users if user not in here))  # each once
        for start in range(0, len(ask), ONLINE_CHUNK):
            chunk = ask[start:start + ONLINE_CHUNK]
            live = await self._online(keys=[USER_KEY_PREFIX + user for user in chunk])
            found.update(user for user, flag in zip(chunk, live, strict=True) if int(flag))
        return found

    async def sweep(self) -> list[str]:
        """Expire members of crashed instances; return users who thereby went offline.

        Safe to run on every instance at once: each user is returned by exactly one call.
        """
        gone: list[str] = []
        while True:
            batch = _strings(await self._sweep(keys=[DEADLINES_KEY],
                                               args=[USER_KEY_PREFIX, SWEEP_CHUNK]))
            gone += batch
            if len(batch) < SWEEP_CHUNK:
                return gone

    async def remove_all(self) -> list[str]:
        """Remove every member of this instance (shutdown); return users now offline."""
        offline = []
        for member, user in list(self.local.items()):
            self._forget(member)
            if await self._remove(user, member):
                offline.append(user)
        return offline


def _strings(values: Sequence[bytes | str]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in values]
