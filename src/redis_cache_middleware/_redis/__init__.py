"""The Redis side of ``RedisCache``: the only code that sends Redis commands.

``cache.RedisCache`` is the facade; each module here owns one thing and never imports it:
``connect`` (building a client from a URL: single node, cluster, sentinel), ``state`` (what
the parts share: client, namespace, generation, the remembered Vary names and TTLs),
``url_keys`` (URL hashes and ignored query parameters, pure), ``lookup`` (reading entries),
``store`` (writing entries, their indexes, dropping superseded ones), ``fill_locks``,
``purging`` (purges, ``clear``, ``on_purge`` hooks) and ``inspection`` (``inspect_url``,
``scan_stats``). The Lua scripts live beside the code that runs them.
"""
