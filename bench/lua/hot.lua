-- (a) hot 200 with gzip: a Zipf(1.0) mix over the hot keys. Args: <keyfile> [zipf_s].
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require "common"

local next_request

setup = common.setup
done = common.done

function init(args)
   local paths = common.read_keys(args[1])
   local reqs = {}
   for i, p in ipairs(paths) do reqs[i] = common.format(p) end
   local seq = common.zipf_sequence(#paths, tonumber(args[2] or "1.0"), 200000, 1000 + thread_id)
   next_request = common.cycler(reqs, seq, nil)
end

function request()
   return next_request()
end
