"""The Lua scripts that make each Redis write, with its change stream events, one atomic step."""

from __future__ import annotations

from fastctx import _core
from fastctx.backends import (
    EVENT_PATCH_MAX_BYTES,
    EVENTS_KEPT,
    EVENTS_MAX_AGE_MS,
    TRIM_AGE_MS,
    TRIM_LENGTH,
    patchlog,
)
from fastctx.backends.keys import CONTEXT_PREFIX, CONTEXT_STREAM_PREFIX, LOG_PREFIX

# A log's magic as a Lua string literal (its bytes as decimal escapes).
_LOG_MAGIC = "".join(f"\\{byte}" for byte in patchlog.MAGIC)

# Lua sees the frame as a string; the version is the 8 bytes after VERSION_OFFSET.
_V_FIRST = _core.VERSION_OFFSET + 1
_V_LAST = _core.VERSION_OFFSET + 8

# Shared by the write scripts: append an event to a change stream, trim it, and keep it alive.
# The trim is rare (see fastctx.backends.TRIM_*): a long stream whose oldest event is well past
# the hour loses what is both older than the hour and not among its last EVENTS_KEPT.
EVENTS_LUA = f"""
local function event(stream, kind, version, token, session, patch)
  local id
  if patch and patch ~= '' then
    id = redis.call('XADD', stream, '*', 'type', kind, 'version', version,
                    'token', token, 'session', session, 'patch', patch)
  else
    id = redis.call('XADD', stream, '*', 'type', kind, 'version', version,
                    'token', token, 'session', session)
  end
  local now = tonumber(string.match(id, '^%d+'))
  if redis.call('XLEN', stream) > {TRIM_LENGTH} then
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]
    if tonumber(string.match(oldest, '^%d+')) < now - {TRIM_AGE_MS} then
      local recent = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', {EVENTS_KEPT})
      local keep = recent[#recent][1]
      local cutoff = now - {EVENTS_MAX_AGE_MS}
      if tonumber(string.match(keep, '^%d+')) > cutoff then keep = string.format('%.0f', cutoff) end
      redis.call('XTRIM', stream, 'MINID', keep)
    end
  end
  return now
end
local function keep_until(stream, at)
  local current = redis.call('PEXPIRETIME', stream)
  if current < 0 or current < at then redis.call('PEXPIREAT', stream, at) end
end
local function session_event(stream, session_key, kind, version, token, session, patch)
  local now = event(stream, kind, version, token, session, patch)
  local pttl = redis.call('PTTL', session_key)
  if pttl < 0 then pttl = 0 end
  keep_until(stream, now + pttl + {EVENTS_MAX_AGE_MS})
end
local function version_of(frame, at)
  -- the 8 bytes at `at` (the frame's version by default), as a number: exact to 2^53
  at = at or {_V_FIRST}
  local v = 0
  for i = at + 7, at, -1 do v = v * 256 + string.byte(frame, i) end
  return v
end
"""

# A context made outside a session is one plain `SET ... PXAT ... NX` (see
# RedisContexts.insert), with no script and no stream: most such contexts are written once and
# read, and their stream's first node, made for one event, would be most of what they cost
# Redis, in CPU and in memory. Its stream is made at its first change after that (`opened`);
# until then readers of the stream take its `created` event from the frame (CONTEXT_EVENTS).
# On a cluster, a session's member is made by CREATE before it joins, with its stream.
# KEYS: context, stream  ARGV: frame, expires_at_ms, token, session
CREATE = f"""
if not redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then return -1 end
redis.call('XADD', KEYS[2], '*', 'type', 'created', 'version', 1, 'token', ARGV[3],
           'session', ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[2] + {EVENTS_MAX_AGE_MS})
return 1
"""

# The `created` event of a context made outside a session, appended when its stream is made:
# at its first change, under the id readers gave it before (its created_at, see
# CONTEXT_EVENTS); at its expiry unchanged, under "0-1", its frame and created_at being gone.
_CREATED_AT = _core.VERSION_OFFSET + 8  # the frame's created_at: the 8 bytes after the version
OPENED_LUA = f"""
local function opened(stream, context, token, session)
  if redis.call('EXISTS', stream) == 1 then return end
  local head, id = redis.call('GETRANGE', context, {_CREATED_AT}, {_CREATED_AT + 7}), '0-1'
  if head ~= '' then id = string.format('%.0f-0', math.max(version_of(head, 1), 1)) end
  redis.call('XADD', stream, id, 'type', 'created', 'version', 1, 'token', token,
             'session', session)
end
"""

# A context stream's events after ARGV[1] (its last one when ARGV[1] is ''); when the stream is
# not made yet (see CREATE), the frame's created_at bytes instead ('' when it is gone too).
# KEYS: stream, context  ARGV: after
CONTEXT_EVENTS = f"""
local found
if ARGV[1] == '' then
  found = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
else
  found = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+')
end
if #found > 0 or redis.call('EXISTS', KEYS[1]) == 1 then return found end
return redis.call('GETRANGE', KEYS[2], {_CREATED_AT}, {_CREATED_AT + 7})
"""

# KEYS: context, stream[, session, members, session stream]
# ARGV: frame, expires_at_ms, token, session
INSERT = (
    EVENTS_LUA
    + f"""
if #KEYS > 2 then
  if redis.call('PTTL', KEYS[3]) < 0 then return 0 end
end
if not redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then return -1 end
event(KEYS[2], 'created', 1, ARGV[3], ARGV[4])
redis.call('PEXPIREAT', KEYS[2], ARGV[2] + {EVENTS_MAX_AGE_MS})  -- a new token's new stream
if #KEYS > 2 then
  local pttl = redis.call('PTTL', KEYS[3])
  redis.call('SADD', KEYS[4], ARGV[3])
  redis.call('PEXPIRE', KEYS[4], pttl)
  session_event(KEYS[5], KEYS[3], 'created', 1, ARGV[3], ARGV[4])
end
return 1
"""
)

# The version check reads the 8 version bytes alone: a frame may be megabytes.
# KEYS: context, log, stream[, session, session stream]
# ARGV: expected version bytes, frame, expires_at_ms, token, version, session, log ("" for
# none), patch for the event ("" for none)
SWAP = (
    EVENTS_LUA
    + OPENED_LUA
    + f"""
local current = redis.call('GETRANGE', KEYS[1], {_core.VERSION_OFFSET}, {_V_LAST - 1})
if current == '' then return 0 end
if current ~= ARGV[1] then return -1 end
opened(KEYS[3], KEYS[1], ARGV[4], ARGV[6])
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
if ARGV[7] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[7], 'PXAT', ARGV[3])
end
event(KEYS[3], 'updated', ARGV[5], ARGV[4], ARGV[6], ARGV[8])
keep_until(KEYS[3], ARGV[3] + {EVENTS_MAX_AGE_MS})
if #KEYS > 3 then
  session_event(KEYS[5], KEYS[4], 'updated', ARGV[5], ARGV[4], ARGV[6], ARGV[8])
end
return 1
"""
)

# Patches appended to the context's log: the frame's version and updated_at move forward in
# place (format 2 leaves them out of its checksum); the base document is not sent or read.
# A format 1 frame must be written again first (-2). This is the write every conversation turn
# makes, so it sends what only the writer knows, each once: the rest (the version it expects,
# the entries, the new log's header, the token, the expiry) is made here from the header and
# the context's key. The log and the stream are named from the context's key: their hash tag
# is its own, so on a cluster they are in the slot the script runs in.
# One or more patches: writers of one context on one node that queued behind each other are
# written together (see Registry), each its own version, with its own event, in order.
# KEYS: context[, session, session stream]
# ARGV: the 24 header bytes from the version on (the last patch's version, created_at,
# updated_at), session, then the patches, oldest first (each event carries its patch up to
# EVENT_PATCH_MAX_BYTES)
# Returns the log's length after the append; 0, -1, -2 when nothing was written.
APPEND = (
    EVENTS_LUA
    + OPENED_LUA
    + f"""
local tag = string.sub(KEYS[1], {len(CONTEXT_PREFIX) + 1})
local log_key, stream = '{LOG_PREFIX}' .. tag, '{CONTEXT_STREAM_PREFIX}' .. tag
local current = redis.call('GETRANGE', KEYS[1], 2, {_V_LAST - 1})
if current == '' then return 0 end
local head, count = ARGV[1], #ARGV - 2
local last = version_of(head, 1)
if version_of(current, 3) ~= last - count then return -1 end
if string.byte(current, 1) ~= 2 then return -2 end
local updated_at = string.sub(head, 17, 24)
local entries = {{}}
for i = 1, count do
  local patch, version = ARGV[i + 2], last - count + i
  local version_bytes = string.sub(head, 1, 8)
  if i < count then
    version_bytes = struct.pack('<I4I4', version % 4294967296, math.floor(version / 4294967296))
  end
  entries[i] = struct.pack('<I4', #patch) .. version_bytes .. updated_at .. patch
end
local entry = table.concat(entries)
local expires_at = redis.call('PEXPIRETIME', KEYS[1])
local size
if redis.call('EXISTS', log_key) == 1 then
  size = redis.call('APPEND', log_key, entry)
else
  local log = '{_LOG_MAGIC}' .. string.sub(current, 3) .. entry
  if expires_at > 0 then
    redis.call('SET', log_key, log, 'PXAT', expires_at)
  else
    redis.call('SET', log_key, log)
  end
  size = #log
end
local token = string.match(tag, '/(%w+)}}$')
opened(stream, KEYS[1], token, ARGV[2])
redis.call('SETRANGE', KEYS[1], {_core.VERSION_OFFSET}, head)
for i = 1, count do
  local patch, shown = ARGV[i + 2], ''
  local number = string.format('%.0f', last - count + i)
  if #patch <= {EVENT_PATCH_MAX_BYTES} then shown = patch end
  event(stream, 'updated', number, token, ARGV[2], shown)
  if #KEYS > 1 then
    session_event(KEYS[3], KEYS[2], 'updated', number, token, ARGV[2], shown)
  end
end
if expires_at > 0 then keep_until(stream, expires_at + {EVENTS_MAX_AGE_MS}) end
return size
"""
)

# What a node that holds version N of a context needs to bring it up to date, in one round
# trip, as small as it can be (every other node sends it after every turn): the log from
# `offset` when the log still starts from the base the node knows (b"" when nothing is
# newer); else 1 when N is still the newest, {frame, log or false} when not, 0 when the
# context is gone. The log is named from the context's key, as in APPEND.
# KEYS: context  ARGV: base version bytes, offset, version bytes
CATCH_UP = f"""
local log_key = '{LOG_PREFIX}' .. string.sub(KEYS[1], {len(CONTEXT_PREFIX) + 1})
if redis.call('GETRANGE', log_key, 3, 10) == ARGV[1] then
  return redis.call('GETRANGE', log_key, ARGV[2], -1)
end
local version = redis.call('GETRANGE', KEYS[1], {_core.VERSION_OFFSET}, {_V_LAST - 1})
if version == '' then return 0 end
if version == ARGV[3] then return 1 end
return {{redis.call('GET', KEYS[1]), redis.call('GET', log_key)}}
"""

# KEYS: context, log, stream[, members, session, session stream]
# ARGV: expected version bytes, token, version, session
REMOVE = (
    EVENTS_LUA
    + OPENED_LUA
    + f"""
local current = redis.call('GETRANGE', KEYS[1], {_core.VERSION_OFFSET}, {_V_LAST - 1})
if current == '' then return 0 end
if current ~= ARGV[1] then return -1 end
opened(KEYS[3], KEYS[1], ARGV[2], ARGV[4])
redis.call('DEL', KEYS[1], KEYS[2])
local now = event(KEYS[3], 'deleted', ARGV[3], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[3], now + {EVENTS_MAX_AGE_MS})
if #KEYS > 3 then
  redis.call('SREM', KEYS[4], ARGV[2])
  session_event(KEYS[6], KEYS[5], 'deleted', ARGV[3], ARGV[2], ARGV[4])
end
return 1
"""
)

# KEYS: context, stream[, session, session stream]  ARGV: token, session
# Every node that hears of the expiry runs this; the first appends the `expired` event, and
# the others find it (or a `deleted` one) already last in the stream and append nothing. The
# frame is gone, so the version is the one of the stream's last event; a context with no
# stream yet was made outside a session and never changed (see CREATE): version 1, and its
# `created` event goes in first.
EXPIRED = (
    EVENTS_LUA
    + OPENED_LUA
    + f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local version = 0
opened(KEYS[2], KEYS[1], ARGV[1], ARGV[2])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if last then
  local fields = last[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'type' and fields[i + 1] ~= 'updated' and fields[i + 1] ~= 'created' then
      return 0
    end
    if fields[i] == 'version' then version = fields[i + 1] end
  end
end
local now = event(KEYS[2], 'expired', version, ARGV[1], ARGV[2])
keep_until(KEYS[2], now + {EVENTS_MAX_AGE_MS})
if #KEYS > 2 then session_event(KEYS[4], KEYS[3], 'expired', version, ARGV[1], ARGV[2]) end
return 1
"""
)

# KEYS: session, session stream, marker  ARGV: session
# The session's own `expired` event (no token); the marker, set once, keeps it to one however
# many nodes hear of the expiry, even when its contexts' events land after it.
SESSION_EXPIRED = (
    EVENTS_LUA
    + f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if not redis.call('SET', KEYS[3], 1, 'NX', 'PX', {EVENTS_MAX_AGE_MS}) then return 0 end
local now = event(KEYS[2], 'expired', 0, '', ARGV[1])
keep_until(KEYS[2], now + {EVENTS_MAX_AGE_MS})
return 1
"""
)

# KEYS: session  ARGV: created_at_ms, ttl_ms, meta
SESSION_CREATE = """
redis.call('HSET', KEYS[1], 'created_at', ARGV[1], 'ttl', ARGV[2], 'meta', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: session, members
SESSION_TOUCH = """
local ttl = redis.call('HGET', KEYS[1], 'ttl')
if not ttl then return false end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {ttl, redis.call('HGET', KEYS[1], 'created_at'), redis.call('HGET', KEYS[1], 'meta')}
"""

# KEYS: members  ARGV: context key prefix of the tenant
# Context keys are built here rather than declared, so this runs on one Redis, not a cluster.
SESSION_MEMBERS = """
local live = {}
for _, token in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. token .. '}') == 1 then
    live[#live + 1] = token
  else
    redis.call('SREM', KEYS[1], token)
  end
end
return live
"""

# KEYS: session, members, session stream
# ARGV: context key prefix of the tenant, stream key prefix of the tenant, session, log key
# prefix of the tenant
SESSION_DELETE = (
    EVENTS_LUA
    + f"""
local existed = redis.call('DEL', KEYS[1])
local tokens = redis.call('SMEMBERS', KEYS[2])
for _, token in ipairs(tokens) do
  local head = redis.call('GETRANGE', ARGV[1] .. token .. '}}', 0, {_V_LAST - 1})
  if head ~= '' then
    redis.call('DEL', ARGV[1] .. token .. '}}', ARGV[4] .. token .. '}}')
    local version = version_of(head)
    local stream = ARGV[2] .. token .. '}}'
    local now = event(stream, 'deleted', version, token, ARGV[3])
    redis.call('PEXPIREAT', stream, now + {EVENTS_MAX_AGE_MS})
    session_event(KEYS[3], KEYS[1], 'deleted', version, token, ARGV[3])
  end
end
redis.call('DEL', KEYS[2])
table.insert(tokens, 1, existed)
return tokens
"""
)

# An MCP session's subscriptions (a hash: token -> cursor) and notification stream; see
# Backend.mcp_subscribe and Backend.mcp_notify.
# KEYS: MCP session, subscriptions, notification stream  ARGV: token, cursor, record, idle_ms
MCP_SUBSCRIBE = (
    EVENTS_LUA
    + """
if not redis.call('SET', KEYS[1], ARGV[3], 'XX', 'PX', ARGV[4]) then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  event(KEYS[3], 'subscribe', ARGV[2], ARGV[1], '')
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""
)

# KEYS: subscriptions, notification stream  ARGV: token
MCP_UNSUBSCRIBE = (
    EVENTS_LUA
    + """
local pttl = redis.call('PTTL', KEYS[1])
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
event(KEYS[2], 'unsubscribe', 0, ARGV[1], '')
if pttl > 0 then redis.call('PEXPIRE', KEYS[2], pttl) end
return 1
"""
)

# KEYS: subscriptions, notification stream
# ARGV: token, expected cursor, new cursor, kind, version, idle_ms
MCP_NOTIFY = (
    EVENTS_LUA
    + """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return false end
if current ~= ARGV[2] then return current end
event(KEYS[2], ARGV[4], ARGV[5], ARGV[1], '')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return ARGV[3]
"""
)


# A tenant's token bucket: up to ARGV[1] tokens taken, of at most ARGV[3] that fill at ARGV[2]
# a second, by the server's clock (one clock for every node). Returns {granted, ms until the
# next token when fewer than asked were granted}. The bucket expires once it would be full.
# KEYS: bucket  ARGV: want, rate, burst
RATE_TAKE = """
local clock = redis.call('TIME')
local now = clock[1] * 1000 + math.floor(clock[2] / 1000)
local want, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'at', 'tokens')
local tokens = burst
if state[1] then
  tokens = math.min(burst, tonumber(state[2]) + (now - tonumber(state[1])) * rate / 1000)
end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'at', now, 'tokens', tostring(tokens))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
local wait = 0
if granted < want then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {granted, wait}
"""


# The bytes a tenant's contexts keep: a hash token -> bytes, with the total under '#' (no token
# is one character long), and a sorted set token -> expires_at, by which contexts that expired
# stop counting. Counts each (token, bytes, expires_at) triple unless together they add bytes
# and that would take the total past ARGV[2] (0: no bound). Returns {counted, total}.
# KEYS: bytes, expiries  ARGV: now_ms, quota, then token, bytes, expires_at for each context
KEEP = """
local now, quota = tonumber(ARGV[1]), tonumber(ARGV[2])
local total = tonumber(redis.call('HGET', KEYS[1], '#') or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, token in ipairs(expired) do
  total = total - tonumber(redis.call('HGET', KEYS[1], token) or '0')
  redis.call('HDEL', KEYS[1], token)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local change = 0
for i = 3, #ARGV, 3 do
  change = change + tonumber(ARGV[i + 1]) - tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
end
if change > 0 and quota > 0 and total + change > quota then
  redis.call('HSET', KEYS[1], '#', total)
  return {0, total}
end
for i = 3, #ARGV, 3 do
  if ARGV[i + 1] == '0' then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[2], ARGV[i + 2], ARGV[i])
  end
end
total = total + change
redis.call('HSET', KEYS[1], '#', total)
return {1, total}
"""


# The same version of a context written again (sealed under another key by `fastctx rekey`):
# the frame replaced as it expires, the log dropped (the frame's base is the newest version),
# no event. KEYS: context, log  ARGV: expected version bytes, frame
RESEAL = f"""
local current = redis.call('GETRANGE', KEYS[1], {_core.VERSION_OFFSET}, {_V_LAST - 1})
if current == '' then return 0 end
if current ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('DEL', KEYS[2])
return 1
"""


# A session's meta written again (sealed under another key), if it is still what was read.
# KEYS: session  ARGV: meta as read, meta to store
REPLACE_META = """
if redis.call('HGET', KEYS[1], 'meta') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'meta', ARGV[2])
return 1
"""
