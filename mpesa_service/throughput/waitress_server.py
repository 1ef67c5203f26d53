"""The service's waitress server, with one change to waitress's HTTP channel: its event loop
does not go round and round on a connection whose request thread is still answering.

In waitress 3.0 a channel counts as writable as soon as any response bytes are queued, while the
request thread answering sends them itself under the channel's buffer lock. When that thread
waits for the GIL (as it does while the callback writer holds it), the loop finds the socket
writable and the lock taken, does nothing, and polls every connection again at once.

So while a request is being answered, the loop leaves its channel to the thread answering it,
unless the channel is closing or its buffer is past outbuf_high_watermark (where the request
thread waits for the loop to drain it). Once the request is done, waitress pulls the trigger
and the loop sends whatever is left, as before. This reads waitress internals (`requests`,
`will_close`, `close_when_flushed`, `total_outbufs_len`); requirements.txt pins waitress, and
tests/test_waitress_server.py checks the behaviour."""

from __future__ import annotations

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server


class AnsweringChannel(HTTPChannel):
    """waitress's channel, not writable while its request thread is answering (see above)."""

    def writable(self):
        if (
            self.requests
            and not (self.will_close or self.close_when_flushed)
            and self.total_outbufs_len <= self.adj.outbuf_high_watermark
        ):
            return False
        return super().writable()


def create(app, **options):
    """waitress.create_server(app, **options), its listening sockets making AnsweringChannels."""
    server = create_server(app, **options)
    if isinstance(server, BaseWSGIServer):
        listeners = [server]
    else:  # several listening sockets: a MultiSocketServer over them
        listeners = [each for each in server.map.values() if isinstance(each, BaseWSGIServer)]
    for listener in listeners:
        listener.channel_class = AnsweringChannel
    return server
