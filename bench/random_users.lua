-- wrk script: 90% of requests for known viewers (uids 1..WRK_USERS, as in the generated
-- Twitch-100k file), 10% for ids the model has never seen; WRK_QUERY is appended as is
-- (e.g. "?live_only=true").
local n = tonumber(os.getenv("WRK_USERS") or "100000")
local query = os.getenv("WRK_QUERY") or ""
math.randomseed(os.time())
request = function()
  local uid
  if math.random() < 0.9 then
    uid = tostring(math.random(1, n))
  else
    uid = "unknown-" .. math.random(1, 1000000000)
  end
  return wrk.format("GET", "/recomendations/user/" .. uid .. query)
end
