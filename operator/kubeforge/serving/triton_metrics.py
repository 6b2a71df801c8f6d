"""Request counts from Triton's Prometheus metrics (`/metrics` on port 8002): what an InferenceService's
status shows for its stable model and its canary.

`nv_inference_request_success{model, version}` counts successful inference requests per model version
since the server started; a service's count is the sum over its servers (every pod of a track). A
server that does not answer is left out of the sum: a count is a figure to watch, not an account.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

REQUEST_SUCCESS = "nv_inference_request_success"
SCRAPE_WORKERS = 16


def request_count(text: str, model: str) -> int:
    """Successful requests of `model` (all versions) in one server's metrics text."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (REQUEST_SUCCESS, f"{REQUEST_SUCCESS}_total") and sample.labels.get("model") == model:
                total += sample.value
    return int(total)


def scrape(url: str, timeout: float = 2.0) -> str | None:
    """One server's metrics text, or None when it does not answer (a pod starting, or gone)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # URLs the runner built
            return resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def total_requests(urls: Iterable[str], model: str, timeout: float = 2.0) -> int | None:
    """The sum over the servers that answered; None when none did. Servers are asked together, so a
    track of many pods with a few not answering costs one timeout, not one each."""
    urls = list(urls)
    if not urls:
        return None
    with ThreadPoolExecutor(max_workers=min(SCRAPE_WORKERS, len(urls))) as pool:
        texts = list(pool.map(lambda url: scrape(url, timeout), urls))
    counts = [request_count(text, model) for text in texts if text is not None]
    return sum(counts) if counts else None
