"""The Redis store's Lua scripts: budgets taken atomically, on the server's clock.

Both clients of the store (sync and asyncio) run these same scripts on the same keys.
"""

# KEYS: rate window, leases, limits. ARGV: rate limit (0: none), window ms,
# concurrency limit (0: none), request id, lease ttl ms, limits ttl ms.
# Returns {granted, ms until the window has room, 1 if every lease is taken}.
ACQUIRE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, window, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local id, ttl = ARGV[4], tonumber(ARGV[5])
redis.call('HSET', KEYS[3], 'rate', rate, 'window', window, 'conc', conc)
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
local wait, full = 0, 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then full = 1 end
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    wait = math.max(1, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 or full == 1 then return {0, wait, full} end
if rate > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, id)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, 0, 0}
"""

# KEYS: rate window, leases. ARGV: window ms. Returns {requests in window, live leases}.
USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf'),
        redis.call('ZCOUNT', KEYS[2], now, '+inf')}
"""
