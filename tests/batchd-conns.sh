#!/bin/sh
# 500 concurrent connections, each with a request, and a slow client that
# never reads its stream: all are answered, and a request made meanwhile
# is answered promptly.
set -u
. "${LLMKIT_SRC:-.}/tests/batchd-lib.sh"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 1100 ] || ulimit -n 1100 2>/dev/null ||
	{ echo "SKIP: cannot open 1100 files (ulimit -n)"; exit 77; }
start_server --max-conns 1024
python3 - "$url" > "$tmp/out" <<'PY'
import asyncio, json, socket, sys, time, urllib.request

host, port = sys.argv[1][len("http://"):].split(":")
port = int(port)

def request(path, body):
    b = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\nConnection: close\r\n\r\n").encode() + b

async def one(i):
    r, w = await asyncio.open_connection(host, port)
    await asyncio.sleep(0.5)             # all 500 open at once
    w.write(request("/v1/completions", {"prompt": "Once", "max_tokens": 4, "seed": i}))
    await w.drain()
    data = await r.read()
    w.close()
    return data.startswith(b"HTTP/1.1 200") and b'"completion_tokens":4' in data

async def main():
    # the slow client: a long stream it never reads, its socket buffer small
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((host, port))
    slow.sendall(request("/v1/completions", {"prompt": "Once", "max_tokens": 2000,
                                              "ignore_eos": True, "stream": True}))
    t0 = time.time()
    res = await asyncio.gather(*(one(i) for i in range(500)), return_exceptions=True)
    t_all = time.time() - t0
    good = sum(1 for x in res if x is True)
    t0 = time.time()
    loop = asyncio.get_running_loop()
    body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(
        urllib.request.Request(sys.argv[1] + "/v1/completions",
                               data=b'{"prompt":"Once","max_tokens":4}',
                               headers={"Content-Type": "application/json"}),
        timeout=10).read())
    t_one = time.time() - t0
    slow.close()
    print(good, t_all < 30, t_one < 2, round(t_all, 2), round(t_one, 3))

asyncio.run(main())
PY
read good all_ok one_ok t_all t_one < "$tmp/out"
echo "500 requests in ${t_all}s, then one in ${t_one}s"
check "500 concurrent connections all answered ($good)" [ "$good" = 500 ]
check "within 30 s" [ "$all_ok" = True ]
check "a request beside a stalled client answered within 2 s" [ "$one_ok" = True ]
check "health" [ "$(curl -s -m 5 "$url/health")" = '{"status":"ok"}' ]
stop_server
check "exit 0" [ "$server_status" = 0 ]
finish
