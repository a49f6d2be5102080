"""COUNTER Release 5.1 reports served from the repository's own counts.

The Item Report (IR) is built in small steps, each a module of its own:

* :mod:`~pirus_bridge.r51.exceptions` — COUNTER's exceptions (Appendix D, Table D.1);
* :mod:`~pirus_bridge.r51.request` — a report request (dates, filters, attributes) from the
  COUNTER API's parameters, and which months are ready;
* :mod:`~pirus_bridge.r51.items` — how an item's metadata becomes its R5.1 elements
  (Item, Item_ID, Publisher, Data_Type, YOP, Access_Type, …);
* :mod:`~pirus_bridge.r51.report` — the report itself, as JSON and as TSV (pure: values in,
  values out), shared by ``report --format r51-json|r51-tsv`` and the COUNTER API;
* :mod:`~pirus_bridge.r51.reader` — the only place that reads counts and metadata from Redis.
"""
