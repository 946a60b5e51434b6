"""Fablecast: a real-time multiplayer live-narrative server.

One import namespace for the whole distribution:

- ``fablecast.protocol``: the wire protocol (messages, codes, codecs, schema).
- ``fablecast.server``: the node (rooms, sessions, fan-out, HTTP).
- ``fablecast.inference``: the engine seam, scheduler, narrator, prompts, backends.
- ``fablecast.client``: the Python SDK (``FablecastClient``, ``StoryView``) and the
  ``watch``/``play`` commands.
- ``fablecast.bench``: benchmarks and load generators (optional extra ``bench``).
- ``fablecast.cli``: the ``fablecast`` command.
"""
