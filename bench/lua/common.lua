-- Shared by the scenario scripts: key files, a Zipf key mix, and one JSON summary line.
--
-- A key file has one line per key: "<path>\t<etag>". Requests are formatted once in init()
-- and request() only returns a prepared string, so wrk spends its core on I/O, not Lua.

local M = {}

local threads = {}
local counter = 0

function M.setup(thread)
   counter = counter + 1
   thread:set("thread_id", counter)
   table.insert(threads, thread)
end

function M.read_keys(path)
   local paths, etags = {}, {}
   for line in io.lines(path) do
      local p, e = line:match("^([^\t]+)\t?(.*)$")
      if p then
         paths[#paths + 1] = p
         etags[#etags + 1] = e
      end
   end
   assert(#paths > 0, "no keys in " .. path)
   return paths, etags
end

-- Browsers send this; the edge parses it as it would in production.
M.ACCEPT_ENCODING = "gzip, deflate, br, zstd"
M.ORIGIN = "https://shop.example"

function M.format(path, extra)
   local headers = {
      ["Accept-Encoding"] = M.ACCEPT_ENCODING,
      ["Origin"] = M.ORIGIN,
      ["User-Agent"] = "settings-cdn-bench",
   }
   for k, v in pairs(extra or {}) do headers[k] = v end
   return wrk.format("GET", path, headers)
end

-- A sequence of `count` key indices in 1..n drawn from Zipf(s): rank r has weight 1/r^s.
-- Rank order is shuffled by a fixed seed so the hot keys are not the first lines of the file.
function M.zipf_sequence(n, s, count, seed)
   math.randomseed(seed)
   local cdf, total = {}, 0
   for r = 1, n do
      total = total + 1 / (r ^ s)
      cdf[r] = total
   end
   local perm = {}
   for i = 1, n do perm[i] = i end
   for i = n, 2, -1 do
      local j = math.random(i)
      perm[i], perm[j] = perm[j], perm[i]
   end
   local seq = {}
   for i = 1, count do
      local u = math.random() * total
      local lo, hi = 1, n
      while lo < hi do
         local mid = math.floor((lo + hi) / 2)
         if cdf[mid] < u then lo = mid + 1 else hi = mid end
      end
      seq[i] = perm[lo]
   end
   return seq
end

-- Cycle through a list of prepared requests. After the first full pass, when `marker` is
-- given, create that file: the bench then interrupts wrk (wrk itself always runs its full
-- duration), and the requests still in flight complete meanwhile as hits.
function M.cycler(reqs, order, marker)
   local pos, n = 0, #order
   return function()
      pos = pos + 1
      if pos > n then
         if marker then
            local f = io.open(marker, "w")
            if f then f:close() end
            marker = nil
         end
         pos = 1
      end
      return reqs[order[pos]]
   end
end

function M.done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH-RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f,"stdev":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, latency.stdev))
end

return M
