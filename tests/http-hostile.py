#!/usr/bin/env python3
"""Random, truncated and malformed HTTP requests and JSON bodies against bitnetd's HTTP
listener (tests/daemon-http.sh runs this; under --enable-sanitizers it is the HTTP fuzz):
every connection gets an answer or a clean close, never a hang past the timeout, and the
daemon stays up. usage: http-hostile.py PORT KEY SEED COUNT"""
import json, random, socket, sys

port, key, seed, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
good = {"prompt": "one two", "max_tokens": 4, "temperature": 0.5, "stop": ["x"], "seed": 3,
        "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}}
paths = ["/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics", "/health", "/",
         "/v1/completions?x=1", "/%00", "/" + "a" * 3000]

def body():
    k = rng.randrange(8)
    if k == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    d = dict(good)
    for f in rng.sample(list(d), rng.randrange(len(d))):
        d[f] = rng.choice([None, -1, 1e308, "", [], {}, "\u0000", "\ud7ff" * 3, 2 ** 70, True,
                           [None], [{"role": 5}], [{"role": "user", "content": [{"type": "image"}]}]])
    s = json.dumps(d).encode()
    if k == 1:
        s = s[: rng.randrange(len(s) + 1)]     # truncated
    if k == 2:
        s = s.replace(b'"', b"", rng.randrange(1, 4))
    return s

answered = 0
for i in range(count):
    b = body()
    method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE", "BREW"])
    lines = [f"{method} {rng.choice(paths)} HTTP/1.1", "Host: x"]
    if rng.random() < 0.9:
        lines.append(f"Authorization: Bearer {key if rng.random() < 0.9 else 'nope'}")
    cl = len(b)
    r = rng.random()
    if r < 0.1:
        cl += rng.randrange(1, 50)                   # claims more than it sends
    elif r < 0.15:
        lines.append("Transfer-Encoding: chunked")
    lines.append(f"Content-Length: {cl}")
    if rng.random() < 0.05:
        lines.append("X-Junk: " + "j" * 20000)       # past the header memory limit
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + b
    if rng.random() < 0.1:
        raw = raw[: rng.randrange(len(raw))]          # the connection dies mid-request
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            got += c
        if got.startswith(b"HTTP/1."):
            answered += 1
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        sys.exit(f"request {i}: no answer and no close within 20 s: {raw[:200]!r}")
    finally:
        s.close()
print(f"{count} hostile requests, {answered} answered with an HTTP status")
