-- Miss runs: every request gets a query no other request used, so no cache can answer it.
-- Arguments after "--": PATH_PREFIX (e.g. "/items/42?q=") and RUN_TAG (unique per run).
-- The query is PATH_PREFIX .. RUN_TAG .. "-" .. thread .. "-" .. counter.

local path_prefix = "/items/42?q="
local run_tag = "run"
local counter = 0
local threads_made = 0   -- in the main Lua state, counts the threads setup() has seen
thread_id = 0            -- a global: setup() gives each thread its own value

function setup(thread)
  thread:set("thread_id", threads_made)
  threads_made = threads_made + 1
end

function init(args)
  if args[1] then path_prefix = args[1] end
  if args[2] then run_tag = args[2] end
end

function request()
  counter = counter + 1
  return wrk.format("GET", path_prefix .. run_tag .. "-" .. thread_id .. "-" .. counter)
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
