"""The server's Prometheus metrics (`GET /metrics`), in a registry of their own so that several servers can live in
one process (the tests) without sharing counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Every metric the server reports; the engine and the HTTP layer update them, `render` writes the text."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("dtune_requests", "Requests accepted for decoding, by endpoint", ["endpoint"],
                                registry=r)
        self.errors = Counter("dtune_request_errors", "Requests answered with an error, by HTTP status", ["status"],
                              registry=r)
        self.finished = Counter("dtune_requests_finished",
                                "Decoding requests ended, by reason: stop, length, cancelled (client gone), failed",
                                ["reason"], registry=r)
        self.generated_tokens = Counter("dtune_generated_tokens", "Completion tokens returned to clients",
                                        registry=r)
        self.tokens_per_second = Gauge("dtune_tokens_per_second",
                                       "Completion tokens per second of wall time of the last batch", registry=r)
        self.forwards = Histogram("dtune_forwards_per_request", "Model forwards each request's row took part in",
                                  buckets=_COUNTS, registry=r)
        self.batch_size = Histogram("dtune_batch_size", "Rows per decoded batch", buckets=_COUNTS, registry=r)
        self.queue_depth = Gauge("dtune_queue_depth", "Requests waiting for the next batch", registry=r)
        self.latency = Histogram("dtune_request_latency_seconds", "From a request's arrival to its last token",
                                 buckets=_SECONDS, registry=r)
        self.first_block = Histogram("dtune_time_to_first_block_seconds",
                                     "From a request's arrival to its first committed block", buckets=_SECONDS,
                                     registry=r)
        self.reloads = Counter("dtune_profile_reloads", "Profile re-reads, by outcome (ok, failed)", ["outcome"],
                               registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
