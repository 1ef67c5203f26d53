-- wrk script for bench/load.py's run_wrk: POST prepared bodies, one per request.
-- Arguments (after --): <file of bodies, one per line> <path> <number of wrk threads>.
-- Thread k of n sends lines k, k+n, k+2n, ... in turn; a thread that has sent all of its lines
-- starts over and marks itself exhausted, so the caller can tell the run needed more bodies.
-- done() prints one JSON line with the figures.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, every = args[1], tonumber(args[3])
  target = args[2]
  headers = {["Content-Type"] = "application/json"}
  bodies, next_body, exhausted = {}, 1, 0
  local line_number = 0
  for line in io.lines(file) do
    if line_number % every == index then
      table.insert(bodies, line)
    end
    line_number = line_number + 1
  end
end

function request()
  if next_body > #bodies then
    exhausted, next_body = 1, 1
  end
  local body = bodies[next_body]
  next_body = next_body + 1
  return wrk.format("POST", target, headers, body)
end

function done(summary, latency, requests)
  local exhausted_threads = 0
  for _, thread in ipairs(threads) do
    if thread:get("exhausted") == 1 then
      exhausted_threads = exhausted_threads + 1
    end
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, '
      .. '"exhausted_threads": %d}\n',
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.status + errors.timeout,
    latency:percentile(50), latency:percentile(99), exhausted_threads))
end
