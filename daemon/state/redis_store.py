"""Strikes in Redis, shared by every daemon of a consumer group.

Each strike is one Lua script run (atomic on the server, so two daemons counting the same
author at once never lose a strike or count a message twice):

- ``<prefix>strike-msg:<message id>``: a hash ``strikes``, ``applied``; present means the
  message was counted (a redelivery reads it back instead of counting again);
- ``<prefix>strikes:<channel length>:<channel>:<author>``: a sorted set of the author's
  strikes in the channel, scored by time (one member per strike of a message's weight);
- ``<prefix>author:<author>``: the author's strike keys, for ``strikes clear``;
- ``<prefix>exemptions`` (a hash: ``[author, channel]`` -> the exemption as JSON) and
  ``<prefix>channels`` (channel -> its switches as JSON): the live rules every daemon reads.

Every key expires with the window (``PEXPIRE``), so Redis forgets what no longer counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import coredis
import orjson
import trio
from coredis.retry import NoRetryPolicy

from chatmod.config.sections import StateSection
from chatmod.errors import ControlError
from chatmod.state.live import Exemption
from chatmod.state.strikes import StrikeOutcome, StrikeStore

# KEYS: message record, strikes set, author's key set.
# ARGV: now (s), window (s), weight, message id.
ADD_STRIKE = """
local seen = redis.call('HMGET', KEYS[1], 'strikes', 'applied')
if seen[1] then
  return {tonumber(seen[1]), 0, tonumber(seen[2] or '0')}
end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ttl = math.ceil(window * 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
for i = 1, tonumber(ARGV[3]) do
  redis.call('ZADD', KEYS[2], now, ARGV[4] .. '#' .. i)
end
local strikes = redis.call('ZCARD', KEYS[2])
redis.call('HSET', KEYS[1], 'strikes', strikes, 'applied', 0)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('PEXPIRE', KEYS[3], ttl)
return {strikes, 1, 0}
"""

# KEYS: the author's key set. ARGV: the channel's strikes key, or '' for every channel.
CLEAR_STRIKES = """
local cleared = 0
local keys = redis.call('SMEMBERS', KEYS[1])
for _, key in ipairs(keys) do
  if ARGV[1] == '' or ARGV[1] == key then
    cleared = cleared + redis.call('ZCARD', key)
    redis.call('DEL', key)
    redis.call('SREM', KEYS[1], key)
  end
end
return cleared
"""

# Seconds to connect, and to wait for one reply.
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 10.0


class RedisStrikeStore(StrikeStore):
    """Strikes in Redis (see the module docstring)."""

    name = "redis"

    def __init__(self, section: StateSection) -> None:
        self.prefix = section.key_prefix
        self._client: coredis.Redis[str] = coredis.Redis(
            host=section.host, port=section.port, db=section.db,
            password=section.password.reveal() if section.password else None,
            decode_responses=True, connect_timeout=CONNECT_TIMEOUT,
            stream_timeout=REPLY_TIMEOUT, retry_policy=NoRetryPolicy())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._client:
            task_status.started()
            await trio.sleep_forever()

    def strikes_key(self, channel: str, author: str) -> str:
        # The channel's length first: no channel and author pair can spell another's key.
        return f"{self.prefix}strikes:{len(channel)}:{channel}:{author}"

    def message_key(self, message_id: str) -> str:
        return f"{self.prefix}strike-msg:{message_id}"

    def author_key(self, author: str) -> str:
        return f"{self.prefix}author:{author}"

    async def add_strike(self, channel: str, author: str, message_id: str, weight: int,
                         now: float, window: float) -> StrikeOutcome:
        reply = await self._client.eval(
            ADD_STRIKE,
            keys=[self.message_key(message_id), self.strikes_key(channel, author),
                  self.author_key(author)],
            args=[repr(now), repr(window), str(weight), message_id])
        if not isinstance(reply, list) or len(reply) != 3:
            raise ValueError(f"unexpected reply from the strike script: {reply!r}")
        strikes, new, applied = (int(str(value)) for value in reply)
        return StrikeOutcome(strikes, new=bool(new), applied=bool(applied))

    async def mark_applied(self, message_ids: Sequence[str], now: float, window: float) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                # HSETEX would be neater; HSET on an expired key would create one that never
                # expires, so only existing records are marked.
                pipe.eval("if redis.call('EXISTS', KEYS[1]) == 1 then "
                          "redis.call('HSET', KEYS[1], 'applied', 1) end return 0",
                          keys=[self.message_key(message_id)])

    async def count(self, channel: str, author: str, now: float, window: float) -> int:
        return int(await self._client.zcount(self.strikes_key(channel, author),
                                             f"({now - window!r}", "+inf"))

    async def put_exemption(self, exemption: Exemption) -> None:
        await self._client.hset(f"{self.prefix}exemptions", {
            orjson.dumps([exemption.author, exemption.channel]).decode():
                orjson.dumps(exemption.as_record()).decode()})

    async def remove_exemption(self, author: str, channel: str) -> bool:
        field = orjson.dumps([author, channel]).decode()
        return bool(await self._client.hdel(f"{self.prefix}exemptions", [field]))

    async def exemptions(self, now: float) -> list[Exemption]:
        key = f"{self.prefix}exemptions"
        live: list[Exemption] = []
        dropped: list[str] = []
        for field, value in (await self._client.hgetall(key)).items():
            try:
                record = orjson.loads(value)
                exemption = Exemption.from_record(record if isinstance(record, dict) else {})
            except (orjson.JSONDecodeError, ControlError):
                dropped.append(field)  # not an exemption this store wrote
                continue
            if exemption.live(now):
                live.append(exemption)
            else:
                dropped.append(field)
        if dropped:
            await self._client.hdel(key, dropped)
        return live

    async def set_switches(self, channel: str, switches: Mapping[str, Any]) -> dict[str, Any]:
        current = (await self.channel_switches()).get(channel, {})
        merged = {**current, **switches}
        await self._client.hset(f"{self.prefix}channels",
                                {channel: orjson.dumps(merged).decode()})
        return merged

    async def channel_switches(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for channel, value in (await self._client.hgetall(f"{self.prefix}channels")).items():
            try:
                switches = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(switches, dict):
                found[channel] = switches
        return found

    async def channels_of(self, author: str) -> list[str]:
        prefix = f"{self.prefix}strikes:"
        channels = []
        for key in await self._client.smembers(self.author_key(author)):
            length, _, rest = key.removeprefix(prefix).partition(":")
            if length.isdigit():
                channels.append(rest[:int(length)])
        return sorted(channels)

    async def clear(self, author: str, channel: str | None = None) -> int:
        only = self.strikes_key(channel, author) if channel is not None else ""
        reply = await self._client.eval(CLEAR_STRIKES, keys=[self.author_key(author)],
                                        args=[only])
        return int(str(reply))
