"""The service's Prometheus instruments: requests by route template, archive jobs, push.

Each application has its own registry (tests run several in one process). Counters and
histograms are updated where the work happens; gauges of state (archives by status, free
disk, sockets, media servers) are set when scraped (`vms.monitoring`), so they cost nothing
between scrapes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

JOB_RESULTS = ("ready", "failed", "cancelled")
_JOB_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The service's instruments in one registry."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "vms_http_requests", "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.request_duration = Histogram(
            "vms_http_request_duration_seconds", "Time to answer an HTTP request, by route",
            ["route"], registry=registry,
        )  # fmt: skip
        self.archives = Gauge(
            "vms_archives", "Server-side archives by status", ["status"], registry=registry
        )
        self.jobs = Counter(
            "vms_archive_jobs", "Archive jobs finished, by result (ready, failed, cancelled)",
            ["result"], registry=registry,
        )  # fmt: skip
        self.fetch_bytes = Counter(
            "vms_archive_fetch_bytes", "Bytes of archives fetched from media servers",
            registry=registry,
        )  # fmt: skip
        self.job_duration = Histogram(
            "vms_archive_job_duration_seconds", "Time from a job's start to its end",
            buckets=_JOB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.push_connections = Gauge(
            "vms_push_connections", "Open push (WebSocket) connections", registry=registry
        )
        self.push_messages = Counter(
            "vms_push_messages", "Push events published", registry=registry
        )
        self.disk_free = Gauge(
            "vms_disk_free_bytes", "Bytes free where archives are written", registry=registry
        )
        self.media_server_up = Gauge(
            "vms_media_server_up", "1 if the media server answered HTTP at the last scrape",
            ["media_server"], registry=registry,
        )  # fmt: skip
        self._published = 0
        for result in JOB_RESULTS:
            self.jobs.labels(result)  # at 0 from the start, so rates work from the first one

    def job_finished(self, result: str, seconds: float | None = None, size: int = 0) -> None:
        """Count an archive job that ended with `result`."""
        self.jobs.labels(result).inc()
        if seconds is not None:
            self.job_duration.observe(seconds)
        if size:
            self.fetch_bytes.inc(size)

    def sync_published(self, published: int) -> None:
        """Bring the push message counter up to the hub's own count."""
        if published > self._published:
            self.push_messages.inc(published - self._published)
            self._published = published
