-- wrk script for the "mixed" load shape: 16 of 20 requests hit /items/{id} (200), 3 hit /missing/{id} (404),
-- 1 hits /fail (500). Each wrk thread walks the list in order.
local paths = {}
for i = 1, 16 do paths[#paths + 1] = "/items/" .. i end
for i = 1, 3 do paths[#paths + 1] = "/missing/" .. i end
paths[#paths + 1] = "/fail"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
