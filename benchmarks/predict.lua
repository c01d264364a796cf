-- wrk script: POST customers to /predict (or any JSON endpoint).
--
-- One fixed customer (the design's example), as in BENCHMARKS.md:
--   wrk -t2 -c64 -d10s --latency -s benchmarks/predict.lua http://127.0.0.1:3000/predict
-- Cycle through a file of bodies (one JSON object per line, compact, "customer_id" first):
--   wrk ... -s benchmarks/predict.lua URL -- BODIES_FILE [API_KEY] [TAG]
-- Each thread starts at its own offset. With TAG (not "-"), every request's customer_id
-- gets the suffix "-TAG-<thread>-<pass>", so no two requests of a run are identical and a
-- cache keyed on the request (or the id) misses every time. API_KEY "-" sends no key.
--
-- done() prints the p95 and one machine-readable line, "wrk-result {json}", with the
-- request count, duration, percentiles (microseconds) and every kind of error
-- (status = non-2xx/3xx answers; connect/read/write/timeout = socket errors).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_id":"C1","age":42,"tenure_months":24,"monthly_charges":89.99,"total_charges":2159.76,"support_calls":3,"internet_service":"Fiber","contract":"Month-to-month","payment_method":"Electronic check"}'

local thread_count = 0
function setup(thread)
   thread:set("thread_id", thread_count)
   thread_count = thread_count + 1
end

local heads, tails = {}, {}
local n, i, pass, tag = 0, 0, 0, nil
local fixed = nil

function init(args)
   local path, key = args[1], args[2]
   if key and key ~= "-" then
      wrk.headers["X-API-Key"] = key
   end
   if args[3] and args[3] ~= "-" then
      tag = args[3]
   end
   if not path then
      fixed = wrk.format()
      return
   end
   local file = assert(io.open(path, "r"))
   for line in file:lines() do
      if #line > 0 then
         -- split after the customer id's last character, before its closing quote
         local _, stop = line:find('"customer_id":"[^"]*')
         assert(stop, "every body needs a \"customer_id\":\"...\" field")
         n = n + 1
         heads[n] = line:sub(1, stop)
         tails[n] = line:sub(stop + 1)
      end
   end
   file:close()
   assert(n > 0, "no bodies in " .. path)
   i = ((thread_id or 0) * 7919) % n -- distinct starting points per thread
end

function request()
   if fixed then
      return fixed
   end
   i = i + 1
   if i > n then
      i = 1
      pass = pass + 1
   end
   local body
   if tag then
      body = heads[i] .. "-" .. tag .. "-" .. (thread_id or 0) .. "-" .. pass .. tails[i]
   else
      body = heads[i] .. tails[i]
   end
   return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format("p95 latency: %.2f ms\n", latency:percentile(95) / 1000))
   io.write(string.format(
      'wrk-result {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
      latency.mean))
end
