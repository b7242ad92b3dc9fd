-- (c) cold path and cache loading: every key in file order, wrapping around.
-- Args: <keyfile> [<marker file> [identity]]: with a marker, it is created after one full pass
-- (the bench then stops wrk: that is how a cache is loaded with every key exactly once);
-- "identity" asks for uncompressed answers (Accept-Encoding: identity), as curl would.
-- Threads start at different offsets so two threads never walk the same keys together.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require "common"

local next_request

setup = common.setup
done = common.done

function init(args)
   local paths = common.read_keys(args[1])
   local reqs, order = {}, {}
   local extra = nil
   if args[3] == "identity" then extra = {["Accept-Encoding"] = "identity"} end
   for i, p in ipairs(paths) do reqs[i] = common.format(p, extra) end
   local n = #paths
   local start = ((thread_id - 1) * math.floor(n / 8)) % n
   for i = 1, n do order[i] = ((start + i - 1) % n) + 1 end
   next_request = common.cycler(reqs, order, args[2])
end

function request()
   return next_request()
end
