"""The engine's own HTTP routes the advisor reads: /health and /metrics, over its Unix socket.

One httpx client per engine socket (httpx binds a transport to one socket path), closed
when the engine ends.
"""

from __future__ import annotations

import httpx

TIMEOUT_S = 2.0


class EngineProbe:
    def __init__(self) -> None:
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, sock: str) -> httpx.AsyncClient:
        client = self._clients.get(sock)
        if client is None:
            client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock),
                                       base_url="http://engine", timeout=TIMEOUT_S)
            self._clients[sock] = client
        return client

    async def healthy(self, sock: str) -> bool:
        try:
            r = await self._client(sock).get("/health")
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def metrics(self, sock: str) -> dict[str, float]:
        """vLLM's Prometheus metrics, parsed by prometheus_client, as {name{labels}: value}."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            r = await self._client(sock).get("/metrics")
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(r.text):
            if not family.name.startswith("vllm"):
                continue
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                                  if k not in ("engine", "model_name"))
                out[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
        return out

    async def forget(self, sock: str) -> None:
        client = self._clients.pop(sock, None)
        if client is not None:
            await client.aclose()

    async def close(self) -> None:
        for sock in list(self._clients):
            await self.forget(sock)
