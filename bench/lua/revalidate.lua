-- (b) 304 revalidation: the hot Zipf mix, each request carrying the key's current ETag in
-- If-None-Match, as a browser revalidating its cached copy does. Args: <keyfile> [zipf_s].
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require "common"

local next_request

setup = common.setup
done = common.done

function init(args)
   local paths, etags = common.read_keys(args[1])
   local reqs = {}
   for i, p in ipairs(paths) do
      assert(etags[i] ~= "", "no etag for " .. p .. " in " .. args[1])
      reqs[i] = common.format(p, { ["If-None-Match"] = etags[i] })
   end
   local seq = common.zipf_sequence(#paths, tonumber(args[2] or "1.0"), 200000, 2000 + thread_id)
   next_request = common.cycler(reqs, seq, nil)
end

function request()
   return next_request()
end
