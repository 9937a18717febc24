-- wrk script for bench/run.sh (a): every request creates one job, the seed's create body at
-- 64x64 and 1 step. The token comes from the environment (PINGVAS_TOKEN). With
-- PINGVAS_WRK_GET=1 every request is a GET of wrk's URL instead (the GET job row).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PINGVAS_TOKEN")
if os.getenv("PINGVAS_WRK_GET") == "1" then
  wrk.method = "GET"
else
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"prompt":"Test image","model":"sd15","width":64,"height":64,"steps":1}'
end

-- No response() callback: with one, wrk hands every answer's headers and body to Lua, which
-- cost wrk (on the server's two cores) about 1 us a request. One machine-readable line; the
-- non-2xx figure is summary.errors.status (wrk counts every answer of status 400 or more there).
done = function(summary, latency, requests)
  io.write(string.format("WRK_JSON {\"requests\":%d,\"seconds\":%.3f,\"non2xx\":%d," ..
    "\"socket_errors\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
