-- wrk script of bench/serving/run: POSTs the body in the file $BENCH_BODY (a TF Serving v1
-- `:predict` body) to the URL wrk is given, and prints one JSON line when wrk is done:
-- responses, seconds, errors by kind (status counts the non-2xx answers), and the latency
-- percentiles in microseconds.

local file = assert(io.open(assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set"), "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = file:read("*a")
file:close()

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"responses": %d, "seconds": %.6f, "errors": {"connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d}, "latency_us": {"p50": %d, "p90": %d, "p99": %d, '
      .. '"mean": %.1f, "max": %d}}\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max))
end
