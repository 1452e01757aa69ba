-- wrk script for bench.py's HTTP ingest scenarios (POST /v1/events/{topic}).
--   wrk -s bench/ingest.lua URL -- MODE DEPTH EVENTS_FILE [BATCH]
-- MODE   "single": one event per request (application/json)
--        "ndjson": each request is BATCH (default 100) consecutive lines of
--                  EVENTS_FILE as one NDJSON body (application/x-ndjson)
-- DEPTH  requests written back to back per pipelined write (1: no pipelining)
-- EVENTS_FILE  one JSON event per line (no eventId: source-http assigns one)
--
-- Requests are built once in init() and cycled, so wrk's Lua costs nearly
-- nothing per request. response() counts statuses (and, for NDJSON batches,
-- the per-line "status":202 results); done() prints one line per counter,
--   COUNT <name> <value>
-- which bench.py sums over wrk's threads and checks against the topic.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function read_lines(path)
  local out = {}
  for line in io.lines(path) do
    if #line > 0 then out[#out + 1] = line end
  end
  return out
end

function init(args)
  mode = args[1] or "single"
  depth = tonumber(args[2] or "1")
  local events = read_lines(args[3])
  local batch = tonumber(args[4] or "100")
  local reqs = {}
  if mode == "ndjson" then
    local i = 1
    while i <= #events do
      local chunk = {}
      for j = i, math.min(i + batch - 1, #events) do chunk[#chunk + 1] = events[j] end
      if #chunk < batch then break end
      reqs[#reqs + 1] = wrk.format("POST", nil,
        {["Content-Type"] = "application/x-ndjson"}, table.concat(chunk, "\n") .. "\n")
      i = i + batch
    end
  else
    for _, e in ipairs(events) do
      reqs[#reqs + 1] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, e)
    end
  end
  -- Pipelined writes: DEPTH consecutive requests in one string.
  writes = {}
  local n = #reqs
  local k = 0
  for w = 1, math.max(1, math.floor(n / depth)) do
    local parts = {}
    for d = 1, depth do
      parts[d] = reqs[(k % n) + 1]
      k = k + 1
    end
    writes[w] = table.concat(parts)
  end
  idx = 0
  nwrites = #writes
  s202, s503, s4xx, sother, ev202, ev503, ev400 = 0, 0, 0, 0, 0, 0, 0
end

function request()
  idx = idx + 1
  if idx > nwrites then idx = 1 end
  return writes[idx]
end

local function count(body, pat)
  local _, c = string.gsub(body, pat, "")
  return c
end

function response(status, headers, body)
  if status == 202 then
    s202 = s202 + 1
  elseif status == 503 then
    s503 = s503 + 1
  elseif status >= 400 and status < 500 then
    s4xx = s4xx + 1
  else
    sother = sother + 1
  end
  if mode == "ndjson" then
    ev202 = ev202 + count(body, '"status":202')
    ev503 = ev503 + count(body, '"status":503')
    ev400 = ev400 + count(body, '"status":400')
  elseif status == 202 then
    ev202 = ev202 + 1
  elseif status == 503 then
    ev503 = ev503 + 1
  elseif status == 400 then
    ev400 = ev400 + 1
  end
end

function done(summary, latency, requests)
  local names = {"s202", "s503", "s4xx", "sother", "ev202", "ev503", "ev400"}
  local tot = {}
  for _, name in ipairs(names) do tot[name] = 0 end
  for _, t in ipairs(threads) do
    for _, name in ipairs(names) do tot[name] = tot[name] + (t:get(name) or 0) end
  end
  for _, name in ipairs(names) do io.write(string.format("COUNT %s %d\n", name, tot[name])) end
  io.write(string.format("COUNT requests %d\n", summary.requests))
  io.write(string.format("COUNT duration_us %d\n", summary.duration))
  io.write(string.format("COUNT errors_connect %d\n", summary.errors.connect))
  io.write(string.format("COUNT errors_read %d\n", summary.errors.read))
  io.write(string.format("COUNT errors_write %d\n", summary.errors.write))
  io.write(string.format("COUNT errors_status %d\n", summary.errors.status))
  io.write(string.format("COUNT errors_timeout %d\n", summary.errors.timeout))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("LAT p%s %d\n", tostring(p), latency:percentile(p)))
  end
  io.write(string.format("LAT max %d\n", latency.max))
  io.write(string.format("LAT mean %.1f\n", latency.mean))
end
