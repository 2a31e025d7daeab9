-- wrk script for the "post" scenario: POST a 64 KiB body to /echo on every request.
-- pyload: method=POST size=65536
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
