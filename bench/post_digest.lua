-- wrk script for bench/run.py: POST /api/v1/signatures with one random SHA-256 digest per
-- request. The bearer token comes from $QES_BENCH_TOKEN (never from the command line, which
-- `ps` shows). done() prints one "BENCH_RESULT {json}" line that run.py parses; only 201
-- responses count as signatures.

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
-- 32 bytes = 43 base64 characters + "="; the 43rd carries 4 data bits and 2 zero bits.
local LAST = "AEIMQUYcgkosw048"
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   created = 0
   other = 0
   math.randomseed(os.time() + os.clock() * 1000000)
   wrk.headers["Authorization"] = "Bearer " .. os.getenv("QES_BENCH_TOKEN")
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local chars = {}
   for i = 1, 42 do
      local r = math.random(1, 64)
      chars[i] = B64:sub(r, r)
   end
   local r = math.random(1, 16)
   chars[43] = LAST:sub(r, r)
   local body = '{"hash_algorithm":"sha256","hashes":["' .. table.concat(chars) .. '="]}'
   -- each request its own signing operation (a token's jti starts one, or one per key)
   local key = {}
   for i = 1, 32 do
      local h = math.random(1, 16)
      key[i] = ("0123456789abcdef"):sub(h, h)
   end
   -- wrk.format takes these headers instead of wrk.headers: copy them over
   local headers = {}
   for name, value in pairs(wrk.headers) do
      headers[name] = value
   end
   headers["Idempotency-Key"] = table.concat(key)
   return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
   if status == 201 then
      created = created + 1
   else
      other = other + 1
   end
end

function done(summary, latency, requests)
   local c, o = 0, 0
   for _, t in ipairs(threads) do
      c = c + t:get("created")
      o = o + t:get("other")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"created":%d,"other_status":%d,"duration_us":%d,"requests":%d,' ..
      '"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
      c, o, summary.duration, summary.requests, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
