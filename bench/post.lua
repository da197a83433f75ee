-- wrk script: POST one JSON body with headers.
--   BENCH_BODY_FILE  the request body (a GraphQL request as JSON)
--   BENCH_AUTH       optional "Bearer ..." for the Authorization header
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
