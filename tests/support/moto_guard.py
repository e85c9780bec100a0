"""Runs moto's server for the tests on a free loopback port.

Usage: moto_guard.py PORT_FILE

Binds port 0, writes the chosen port to PORT_FILE once the server listens,
and exits as soon as the process that started it is gone (its parent pid
changes), so a test run that dies or is killed never leaves an emulator
behind holding CI's output.

Requests are served one at a time. moto's handlers are not thread-safe: a
TransactWriteItems that fails restores a snapshot of the whole table, which
under concurrency undoes other requests' writes. Real DynamoDB transactions
are serializable; serving requests in turn keeps that property.
"""

import os
import sys
import threading
import time

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


class Serialized:
    """A WSGI app that lets one request at a time into the one it wraps."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            # Drain the body inside the lock: moto may build it lazily.
            return list(self.app(environ, start_response))


def main() -> None:
    port_file = sys.argv[1]
    parent = os.getppid()
    app = Serialized(DomainDispatcherApplication(create_backend_app))
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(tmp, port_file)
    try:
        while os.getppid() == parent:
            time.sleep(0.2)
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
