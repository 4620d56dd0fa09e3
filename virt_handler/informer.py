"""A list-and-watch cache of one kind of object, narrowed by selectors, calling back on every change.

The watch is a streaming GET (``?watch=1``) through the shared :class:`podvirt_common.kube.Kube`
connection; a stream that ends is resumed from the last resourceVersion, an expired one (410) is
answered with a fresh list, and errors back off. The cache is what the handler reconciles against;
the callbacks only say *which* object to look at again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from podvirt_common.kube import GoneError, Kube, Resource, error_for

log = logging.getLogger("virt_handler.informer")
Obj = dict[str, Any]
WATCH_TIMEOUT_SECONDS = 240


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Informer:
    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        on_change: Callable[[str, Obj | None], None],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.on_change = on_change
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._cache: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._synced = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"informer-{resource.plural}", daemon=True)

    # -- reading the cache ------------------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._cache.get(key)

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._cache.values())

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _selectors(self) -> dict[str, str]:
        query = {}
        if self.label_selector:
            query["labelSelector"] = self.label_selector
        if self.field_selector:
            query["fieldSelector"] = self.field_selector
        return query

    def _relist(self) -> str:
        query: dict[str, str | int | bool] = dict(self._selectors())
        page = self.kube.request("GET", self.resource.path(), query=query)
        fresh = {_key(o): o for o in page.get("items") or []}
        with self._lock:
            gone = set(self._cache) - set(fresh)
            changed = [
                k
                for k, o in fresh.items()
                if self._cache.get(k, {}).get("metadata", {}).get("resourceVersion")
                != o.get("metadata", {}).get("resourceVersion")
            ]
            self._cache = fresh
        for key in gone:
            self.on_change(key, None)
        for key in changed:
            self.on_change(key, fresh[key])
        self._synced.set()
        return str((page.get("metadata") or {}).get("resourceVersion", ""))

    def _watch(self, resource_version: str) -> str:
        query = {
            **self._selectors(),
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS),
        }
        api = self.kube.api
        _, url, headers, _, _ = api.param_serialize(
            "GET", self.resource.path(), header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        url += "?" + urlencode(query)
        response = api.call_api("GET", url, header_params=headers, _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30))
        if response.status >= 400:
            raise error_for(response.status, response.read(), "WATCH", self.resource.path())
        raw = response.response  # urllib3 response, streamed line by line
        try:
            buffer = b""
            for chunk in raw.stream(65536, decode_content=True):
                if self._stop.is_set():
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        resource_version = self._apply(json.loads(line), resource_version)
        finally:
            raw.release_conn()
        return resource_version

    def _apply(self, event: Obj, resource_version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 500)
            raise error_for(code, json.dumps(obj).encode(), "WATCH", self.resource.path())
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_rv
        key = _key(obj)
        with self._lock:
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
        self.on_change(key, None if kind == "DELETED" else obj)
        return new_rv

    def _run(self) -> None:
        backoff = 0.5
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self._relist()
                resource_version = self._watch(resource_version)
                backoff = 0.5
            except GoneError:
                resource_version = ""
            except Exception as exc:
                log.warning("watching %s failed, retrying in %.1f s: %s", self.resource.plural, backoff, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15.0)
                resource_version = ""
            if self._stop.is_set():
                break
            time.sleep(0)
