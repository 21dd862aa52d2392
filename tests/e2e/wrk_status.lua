-- Counts every response whose status is not 2xx (wrk's own figure lumps 3xx in with 2xx),
-- and prints one machine-readable line for tests/e2e/rolling_restart.sh.

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    non2xx = 0
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
    end
end

function done(summary, latency, requests)
    local non = 0
    for _, thread in ipairs(threads) do
        non = non + thread:get("non2xx")
    end
    local errors = summary.errors
    io.write(string.format(
        "wrk-summary requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, non, errors.connect, errors.read, errors.write, errors.timeout))
end
