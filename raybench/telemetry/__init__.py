"""Watching a run while it goes: Ray metrics, the server's own metrics, terminal progress.

- ``catalog``: every metric raybench exports through Ray (names, kinds, tags, bucket edges)
- ``client_metrics``: ``ClientMetrics``, the load generators' metrics from each poll's Arrow batches
- ``server_metrics``: reading vLLM/SGLang/simulator /metrics into a per-cell timeline (Parquet)
- ``progress``: ``ProgressDisplay``, live on a terminal, plain lines elsewhere, and the final table
- ``ray_sink`` and ``scraper``: the Ray adapters (a metrics sink, the scraper actor)

Only the last two import Ray; docs/observability.md shows how to see it all in Grafana.
"""
