"""The other end of tests/alerting/smoke, on 127.0.0.1 with a free port.

GET /metrics serves `toucan_smoke_value V` in Prometheus's text format, V being the content of
VALUE_FILE at that time; POST /webhook appends {"authorization": ..., "body": THE JSON POSTED}
as one JSON line to RECEIVED. The port goes to PORT_FILE once the server listens. It exits on
SIGTERM, or by itself after MAX_SECONDS.

    python3 smoke_server.py PORT_FILE VALUE_FILE RECEIVED MAX_SECONDS
"""

import http.server
import json
import os
import signal
import sys
import threading

METRICS = """# HELP toucan_smoke_value The value tests/alerting/smoke sets.
# TYPE toucan_smoke_value gauge
toucan_smoke_value %s
"""


def main():
    port_file, value_file, received = sys.argv[1:4]
    max_seconds = float(sys.argv[4])
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404)
                return
            with open(value_file, encoding="utf-8") as f:
                metrics = (METRICS % float(f.read().strip())).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(metrics)))
            self.end_headers()
            self.wfile.write(metrics)

        def do_POST(self):
            if self.path != "/webhook":
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                body = json.loads(body)
            except ValueError:
                body = {"unparsed": body.decode("utf-8", "replace")}
            line = json.dumps(
                {"authorization": self.headers.get("Authorization"), "body": body}
            )
            with lock, open(received, "a", encoding="utf-8") as f:
                f.write(line + "\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format, *args):
            sys.stderr.write("smoke_server: %s\n" % (format % args))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = port_file + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("%d\n" % server.server_address[1])
    os.replace(tmp, port_file)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    timer = threading.Timer(max_seconds, stop)
    timer.daemon = True
    timer.start()
    server.serve_forever()


if __name__ == "__main__":
    main()
