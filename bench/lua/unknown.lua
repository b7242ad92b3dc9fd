-- (d) unknown keys: well-formed write keys that were never published, drawn uniformly, so
-- the edge's negative cache and its Redis misses are what is measured. Args: <keyfile>.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require "common"

local next_request

setup = common.setup
done = common.done

function init(args)
   local paths = common.read_keys(args[1])
   local reqs, order = {}, {}
   for i, p in ipairs(paths) do reqs[i] = common.format(p) end
   math.randomseed(3000 + thread_id)
   for i = 1, 200000 do order[i] = math.random(#paths) end
   next_request = common.cycler(reqs, order, nil)
end

function request()
   return next_request()
end
