-- Hot-set runs: each request takes the next of N hot URLs in turn (N after "--", 256 by
-- default), so that concurrent requests are for different URLs: no lookup is shared.

local count = 256
local counter = 0
local offset = 0
local threads_made = 0
thread_id = 0

function setup(thread)
  thread:set("thread_id", threads_made)
  threads_made = threads_made + 1
end

function init(args)
  if args[1] then count = tonumber(args[1]) end
  offset = thread_id * 97
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/items/" .. ((counter + offset) % count) .. "?q=hot")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p99_9":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
