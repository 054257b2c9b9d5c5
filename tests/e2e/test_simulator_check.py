"""The simulator's final check, against a stand-in service over HTTP: it can fail."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse

from interfaces.simulator import check_states, expected_state, plan


def test_the_state_check_names_a_prescription_whose_state_differs_from_its_facts():
    """The simulator's final check can fail: against a service that answers one prescription's
    state without its last fact, that prescription, and only it, is named."""
    planned = plan(3, duplicates=0.0, shuffle=False, seed=5)
    subjects = sorted(planned.lifecycles)
    wrong = subjects[1]

    class Service(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/projections":
                body = [{"name": "prescriptions", "position": 1, "head": 1, "lag": 0}]
            else:
                subject = urllib.parse.unquote(self.path.rsplit("/", 1)[1])
                events = planned.lifecycles[subject]
                body = expected_state(events[:-1] if subject == wrong else events)
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Service)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        equal, mismatches = check_states(
            f"http://127.0.0.1:{server.server_port}", "key", planned.lifecycles, timeout_s=5
        )
    finally:
        server.shutdown()
    assert (equal, mismatches) == (2, [wrong])
