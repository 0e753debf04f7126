"""The wire: ``raftkv.capnp`` and ``wire.py`` (schema, limits), ``streams.py`` (the one dial/listen seam),
``peers.py`` (node-to-node links and the peer service), ``frames.py`` (the data plane), ``snapshot_stream.py``
(InstallSnapshot in chunks), ``codec.py`` (core messages to and from capnp), ``address.py``, ``kjloop.py``."""
