package redisloc

import "github.com/redis/go-redis/v9"

// saveScript is location.Apply for one AoR, run inside Redis so that a
// REGISTER is one round trip and atomic for its AoR (both keys share the
// AoR's hash slot). The Go side prepares each contact (key, expiry,
// encoded blob with Call-ID, CSeq and Registered already set); the script
// takes the decisions that depend on what is stored. The rules and their
// order are Apply's; TestScriptMatchesApply runs both on the same random
// requests.
//
// Times are 20-digit zero-padded unix nanoseconds compared as strings
// (Lua numbers are doubles: nanoseconds would lose precision), and
// milliseconds as numbers for scores. Key expiry is relative (PEXPIRE of
// the latest binding's expiry minus the request's now): the edge's clock
// decides expiry, so a skew between edge and Redis clocks does not expire
// keys early.
//
// KEYS: hash (binding key → blob), zset (binding key → expiry ms).
// ARGV: now, now ms, callid, cseq, wildcard (0/1), max contacts, replace
// (0/1), n,
// then n × (key, expires, expires ms, q, contact, blob).
// Returns {"ok", added, refreshed, removed, evicted, blob...} with the
// bindings now stored, or {"ooo"} / {"tmc"} having changed nothing.
const saveLua = `
local hk, zk = KEYS[1], KEYS[2]
local now, nowms, cid, cseq = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local wild, maxc, replace = ARGV[5] == '1', tonumber(ARGV[6]), ARGV[7] == '1'
local n = tonumber(ARGV[8])

local raw = redis.call('HGETALL', hk)
local stored, nxt = {}, {}
for i = 1, #raw, 2 do
  local k, blob = raw[i], raw[i+1]
  stored[#stored+1] = k
  local m = cjson.decode(blob)
  if m.e > now then
    nxt[#nxt+1] = {k=k, b=blob, c=m.c, s=m.s, e=m.e, x=m.x, r=m.r, q=m.q, u=m.u}
  end
end
-- the order Apply sees: the stored order, which is SortBindings'
table.sort(nxt, function(a, b)
  if a.q ~= b.q then return a.q > b.q end
  if a.r ~= b.r then return a.r > b.r end
  return a.u < b.u
end)
local function ooo(b) return b.c == cid and cseq <= b.s end
local before, nbefore = {}, #nxt
for _, b in ipairs(nxt) do before[b.k] = true end

if wild then
  for _, b in ipairs(nxt) do if ooo(b) then return {'ooo'} end end
  redis.call('DEL', hk, zk)
  return {'ok', 0, 0, nbefore, 0}
end

local touched = {}
for j = 0, n - 1 do
  local o = 8 + j * 6
  local k, e, x, q, u, blob = ARGV[o+1], ARGV[o+2], tonumber(ARGV[o+3]), tonumber(ARGV[o+4]), ARGV[o+5], ARGV[o+6]
  local idx
  for i, b in ipairs(nxt) do if b.k == k then idx = i break end end
  if idx and not touched[k] and ooo(nxt[idx]) then return {'ooo'} end
  touched[k] = true
  if not (e > now) then
    if idx then table.remove(nxt, idx) end
  else
    local nb = {k=k, b=blob, c=cid, s=cseq, e=e, x=x, r=now, q=q, u=u, w=true}
    if idx then nxt[idx] = nb else nxt[#nxt+1] = nb end
  end
end

local added = 0
for _, b in ipairs(nxt) do if not before[b.k] then added = added + 1 end end
local evicted, nev = {}, 0
if maxc > 0 and #nxt > maxc then
  if not replace then
    if added > 0 then return {'tmc'} end
  else
    local idx = {}
    for i = 1, #nxt do idx[i] = i end
    table.sort(idx, function(a, b)
      local A, B = nxt[a], nxt[b]
      if A.r ~= B.r then return A.r < B.r end
      if A.q ~= B.q then return A.q < B.q end
      return a < b
    end)
    for i = 1, #nxt - maxc do evicted[nxt[idx[i]].k] = true nev = nev + 1 end
    local kept = {}
    for _, b in ipairs(nxt) do if not evicted[b.k] then kept[#kept+1] = b end end
    nxt = kept
  end
end

local radd, rref, kept, evold = 0, 0, 0, 0
for _, b in ipairs(nxt) do
  if not before[b.k] then radd = radd + 1
  else
    kept = kept + 1
    if touched[b.k] then rref = rref + 1 end
  end
end
for k in pairs(evicted) do if before[k] then evold = evold + 1 end end
local out = {'ok', radd, rref, nbefore - kept - evold, nev}

if #nxt == 0 then
  redis.call('DEL', hk, zk)
  return out
end
local live, maxx = {}, 0
for _, b in ipairs(nxt) do
  live[b.k] = true
  if b.x > maxx then maxx = b.x end
  if b.w then
    redis.call('HSET', hk, b.k, b.b)
    redis.call('ZADD', zk, b.x, b.k)
  end
  out[#out+1] = b.b
end
local gone = {}
for _, k in ipairs(stored) do if not live[k] then gone[#gone+1] = k end end
if #gone > 0 then
  redis.call('HDEL', hk, unpack(gone))
  redis.call('ZREM', zk, unpack(gone))
end
local ttl = math.max(maxx - nowms, 1)
redis.call('PEXPIRE', hk, ttl)
redis.call('PEXPIRE', zk, ttl)
return out
`

// pruneLua removes the given binding keys and every binding expired at
// the given time, keeps the AoR's key expiry at its latest binding, and
// returns the bindings left. Remove and the reaper use it.
//
// KEYS: hash, zset. ARGV: now ms, keys to remove...
const pruneLua = `
local hk, zk = KEYS[1], KEYS[2]
local gone = redis.call('ZRANGEBYSCORE', zk, '-inf', ARGV[1])
for i = 2, #ARGV do gone[#gone+1] = ARGV[i] end
if #gone > 0 then
  redis.call('HDEL', hk, unpack(gone))
  redis.call('ZREM', zk, unpack(gone))
end
local last = redis.call('ZRANGE', zk, -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', hk, zk)
  return {}
end
local ttl = math.max(tonumber(last[2]) - tonumber(ARGV[1]), 1)
redis.call('PEXPIRE', hk, ttl)
redis.call('PEXPIRE', zk, ttl)
return redis.call('HVALS', hk)
`

var (
	saveScript  = redis.NewScript(saveLua)
	pruneScript = redis.NewScript(pruneLua)
)
