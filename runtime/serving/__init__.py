"""Serving at scale: a broker in front of engine worker processes (docs/protocol.md,
*Workers*).

* :mod:`.worker`: :class:`~.worker.Worker`, the stream server of
  :mod:`nvmstream.runtime.server` on a DEALER socket connected to a broker.
* :mod:`.broker`: :class:`~.broker.Broker`, the ROUTER clients connect to; it pins each stream
  to one worker, heartbeats the workers and tells clients which streams a dead worker held.
* :mod:`.control`: the broker <-> worker control messages.
"""
