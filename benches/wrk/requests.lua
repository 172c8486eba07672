-- wrk script of benches/run.py: cycles through requests listed in a generated Lua file and
-- prints one machine-readable summary line.
--
-- Environment:
--   WRK_REQUESTS    path of a Lua file that returns {{method=, path=, headers=, body=}, ...}
--   WRK_DELAY_MS    optional mean pause (ms, fractional) before each request on a connection:
--                   approximate pacing, since wrk's timers tick in whole milliseconds
--   WRK_STOP_AFTER  optional: once this many responses have arrived, stop sending and print
--                   "@@stopped" (wrk itself runs until -d or SIGINT, which run.py then sends)
--
-- wrk counts every status above 399 in summary.errors.status (its "Non-2xx or 3xx responses"
-- line) whether or not a script is loaded, so no response() hook is needed for that: the hook
-- would make wrk hand every header and body to Lua and slow the client down.

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local specs = dofile(os.getenv("WRK_REQUESTS"))
  for _, spec in ipairs(specs) do
    requests[#requests + 1] = wrk.format(spec.method, spec.path, spec.headers, spec.body)
  end
  count = #requests
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "")
if delay_ms then
  local whole = math.floor(delay_ms)
  local fraction = delay_ms - whole
  -- Dithering between two whole milliseconds gives the fractional mean on average.
  function delay()
    if math.random() < fraction then
      return whole + 1
    end
    return whole
  end
end

local stop_after = tonumber(os.getenv("WRK_STOP_AFTER") or "")
if stop_after then
  local seen = 0
  function response(status, headers, body)
    seen = seen + 1
    if seen == stop_after then
      io.write("@@stopped\n")
      io.flush()
      wrk.thread:stop()
    end
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "@@wrk {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, \"mean_us\": %.1f, "
      .. "\"p50_us\": %d, \"p90_us\": %d, \"p99_us\": %d, \"max_us\": %d, "
      .. "\"status\": %d, \"connect\": %d, \"read\": %d, \"write\": %d, \"timeout\": %d}\n",
    summary.requests, summary.duration, summary.bytes, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    errors.status, errors.connect, errors.read, errors.write, errors.timeout))
end
