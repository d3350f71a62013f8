"""A contract server for Eureka server 1.10.x, and a client heartbeat loop like the real one.

Held to the code of Netflix/eureka at tag v1.10.18 (the resources Spring Cloud Netflix's
Eureka server embeds too):

    eureka-core  resources/ApplicationResource.java   POST {base}/apps/{APP}: addInstance's
                                                      checks (400 "Missing instanceId", ...),
                                                      204 on success; GET {base}/apps/{APP}
                 resources/InstanceResource.java      GET (200 JSON/XML, 404 empty), PUT renew
                                                      (404 unknown, 404 when the client's
                                                      lastDirtyTimestamp is newer), PUT/DELETE
                                                      status (404 unknown, 500 bad value),
                                                      DELETE cancel (200 / 404)
                 registry/AbstractInstanceRegistry.java  register, renew, statusUpdate,
                                                      deleteStatusOverride, internalCancel
                 registry/rule/*.java                 the status rules renew and register
                                                      apply: DownOrStartingRule,
                                                      OverrideExistsRule, LeaseExistsRule
    eureka-client converters/EurekaJacksonCodec.java  {"instance": {..., "status",
                                                      "overriddenStatus", "port": {"$": N,
                                                      "@enabled": "true"}, ...}}
                 DiscoveryClient.java                 renew(): on 404 mark dirty, register()
                 shared/transport/jersey/AbstractJerseyEurekaHttpClient.java
                                                      sendHeartBeat: PUT apps/APP/ID?status=
                                                      &lastDirtyTimestamp=; register: POST JSON

The application name is upper-cased on the way in (ApplicationResource), so any case names
the same application.  JSON is served only when Accept names it (the resources produce XML
first); otherwise a minimal XML body.  `auth=(user, password)` puts HTTP basic auth in front,
as Spring Security does for a Spring Cloud Eureka server (401 with WWW-Authenticate).

Not modelled: the 30 s response cache in front of GET {base}/apps (the instance resource
read back by the hook is not cached in the real server either), peer replication, lease
expiry and eviction, self-preservation, the delta endpoint.

DiscoveryClientLoop is the client side: it registers (POST) and then renews (PUT) every
`interval` seconds (30 s in the real client, eureka.instance.lease-renewal-interval-in-
seconds), and on a 404 renewal registers again, as DiscoveryClient.renew() does.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from contracts.recording import ContractServer, Loop, Reply, Request, http_call

STATUSES = ("UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN")
_INSTANCE = re.compile(r"^/apps/(?P<app>[^/]+)(?:/(?P<id>[^/]+)(?P<status>/status)?)?$")


class EurekaServer(ContractServer):
    """Eureka's registry behind its REST resources, under `prefix` ("/eureka" or
    "/eureka/v2")."""

    def __init__(self, prefix: str = "/eureka", auth: tuple[str, str] | None = None,
                 legacy_override_field: bool = False) -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.auth = auth
        # Some releases wrote "overriddenstatus" (Netflix/eureka #1051).
        self.legacy_override_field = legacy_override_field
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}  # (APP, id) -> InstanceInfo
        self.overrides: dict[str, str] = {}  # overriddenInstanceStatusMap, keyed by id

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    # -------------------------------------------------------- test helpers

    def info(self, app: str, iid: str) -> dict[str, Any] | None:
        with self.lock:
            info = self.leases.get((app.upper(), iid))
            return dict(info) if info is not None else None

    def discoverable(self, app: str) -> set[str]:
        """The IDs a discovery client would use: those with status UP."""
        with self.lock:
            return {iid for (a, iid), info in self.leases.items()
                    if a == app.upper() and info["status"] == "UP"}

    # -------------------------------------------------------------- routes

    def route(self, req: Request) -> Reply:
        if self.auth is not None and not self._authorized(req):
            body = json.dumps({"timestamp": "2024-01-01T00:00:00.000+00:00", "status": 401,
                               "error": "Unauthorized", "path": req.path}).encode()
            return Reply(401, body, "application/json",
                         {"WWW-Authenticate": 'Basic realm="Realm"'})
        if not req.path.startswith(self.prefix + "/"):
            return Reply(404)
        tail = req.path[len(self.prefix):]
        if tail in ("/apps", "/apps/"):
            with self.lock:
                return self._applications(req)
        m = _INSTANCE.match(tail)
        if m is None:
            return Reply(404)
        app, iid, status = m["app"].upper(), m["id"], m["status"]
        with self.lock:
            if iid is None:
                return self._application(req, app)
            if status:
                return self._status(req, app, iid)
            return self._instance(req, app, iid)

    def _authorized(self, req: Request) -> bool:
        assert self.auth is not None
        want = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return req.headers.get("authorization", "") == f"Basic {want}"

    def _applications(self, req: Request) -> Reply:
        """GET {base}/apps: the whole registry (ApplicationsResource.getContainers)."""
        if req.method != "GET":
            return Reply(405)
        apps: dict[str, list[dict[str, Any]]] = {}
        for (app, _), info in self.leases.items():
            apps.setdefault(app, []).append(self._shown(info))
        doc = {"applications": {"versions__delta": "1", "apps__hashcode": "",
                                "application": [{"name": a, "instance": i}
                                                for a, i in apps.items()]}}
        return Reply(200, json.dumps(doc).encode(), "application/json")

    def _application(self, req: Request, app: str) -> Reply:
        if req.method == "POST":
            return self._add_instance(req, app)
        if req.method != "GET":
            return Reply(405)
        infos = [self._shown(i) for (a, _), i in self.leases.items() if a == app]
        if not infos:
            return Reply(404)
        return Reply(200, json.dumps({"application": {"name": app, "instance": infos}})
                     .encode(), "application/json")

    def _instance(self, req: Request, app: str, iid: str) -> Reply:
        info = self.leases.get((app, iid))
        if req.method == "GET":
            if info is None:
                return Reply(404)
            if "json" not in req.headers.get("accept", ""):
                return Reply(200, _xml(self._shown(info)), "application/xml")
            return Reply(200, json.dumps({"instance": self._shown(info)}).encode(),
                         "application/json")
        if req.method == "PUT":
            return self._renew(req, app, iid)
        if req.method == "DELETE":  # cancelLease -> internalCancel
            self.overrides.pop(iid, None)
            if self.leases.pop((app, iid), None) is None:
                return Reply(404)
            return Reply(200)
        return Reply(405)

    def _status(self, req: Request, app: str, iid: str) -> Reply:
        info = self.leases.get((app, iid))
        if info is None:
            return Reply(404)
        value = req.arg("value")
        if req.method == "PUT":  # statusUpdate: InstanceStatus.valueOf(null/bad) -> 500
            if value not in STATUSES:
                return Reply(500)
            if info["status"] != value:
                self.overrides[iid] = value
                info["overriddenStatus"] = value
                info["status"] = value
                info["actionType"] = "MODIFIED"
            return Reply(200)
        if req.method == "DELETE":  # deleteStatusUpdate: no value means UNKNOWN
            new = value if value is not None else "UNKNOWN"
            if new not in STATUSES:
                return Reply(500)
            if self.overrides.pop(iid, None) is not None:
                info["overriddenStatus"] = "UNKNOWN"
                info["status"] = new
                info["actionType"] = "MODIFIED"
            return Reply(200)
        return Reply(405)

    def _renew(self, req: Request, app: str, iid: str) -> Reply:
        info = self.leases.get((app, iid))
        if info is None:
            return Reply(404)  # "Not Found (Renew)": the client registers again
        status = self._rule(info, info)
        if status == "UNKNOWN":
            return Reply(404)  # "possibly due to deleted override; re-register required"
        info["status"] = status
        dirty = req.arg("lastDirtyTimestamp")
        if dirty is not None and dirty.isdigit() \
                and int(dirty) > int(info.get("lastDirtyTimestamp") or 0):
            return Reply(404)  # validateDirtyTimestamp: the client has newer data
        return Reply(200)

    def _add_instance(self, req: Request, app: str) -> Reply:
        try:
            doc = json.loads(req.body)
            info = doc["instance"]
            assert isinstance(info, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return Reply(400)
        for key, what in (("instanceId", "Missing instanceId"), ("hostName", "Missing hostname"),
                          ("ipAddr", "Missing ip address"), ("app", "Missing appName")):
            if not str(info.get(key) or "").strip():
                return Reply(400, what.encode())
        if str(info["app"]).upper() != app:
            return Reply(400, f"Mismatched appName, expecting {app} but was "
                              f"{str(info['app']).upper()}".encode())
        dci = info.get("dataCenterInfo")
        if not isinstance(dci, dict):
            return Reply(400, b"Missing dataCenterInfo")
        if not dci.get("name"):
            return Reply(400, b"Missing dataCenterInfo Name")
        self._register(app, dict(info))
        return Reply(204)

    def _register(self, app: str, info: dict[str, Any]) -> None:
        """AbstractInstanceRegistry.register, without replication."""
        iid = str(info["instanceId"])
        info["app"] = app
        existing = self.leases.get((app, iid))
        if existing is not None and int(existing.get("lastDirtyTimestamp") or 0) \
                > int(info.get("lastDirtyTimestamp") or 0):
            info = existing  # the registry's copy is newer than the one sent
        sent = info.pop("overriddenstatus", None) or info.get("overriddenStatus") or "UNKNOWN"
        if sent != "UNKNOWN" and iid not in self.overrides:
            self.overrides[iid] = sent
        info["overriddenStatus"] = self.overrides.get(iid, "UNKNOWN")
        info["status"] = self._rule(info, existing)
        info["actionType"] = "ADDED"
        info["lastUpdatedTimestamp"] = str(int(time.time() * 1000))
        self.leases[(app, iid)] = info

    def _rule(self, info: dict[str, Any], existing: dict[str, Any] | None) -> str:
        """FirstMatchWinsCompositeRule(DownOrStartingRule, OverrideExistsRule,
        LeaseExistsRule), falling back to the instance's own status."""
        status = str(info.get("status") or "UNKNOWN")
        if status not in ("UP", "OUT_OF_SERVICE"):
            return status  # DOWN, STARTING, UNKNOWN: the instance is believed
        override = self.overrides.get(str(info["instanceId"]))
        if override is not None:
            return override
        if existing is not None and existing.get("status") in ("UP", "OUT_OF_SERVICE"):
            return str(existing["status"])
        return status

    def _shown(self, info: dict[str, Any]) -> dict[str, Any]:
        shown = dict(info)
        if self.legacy_override_field:
            shown["overriddenstatus"] = shown.pop("overriddenStatus", "UNKNOWN")
        return shown


def _xml(info: dict[str, Any]) -> bytes:
    fields = "".join(f"<{k}>{info[k]}</{k}>" for k in ("instanceId", "app", "status")
                     if k in info)
    return f"<instance>{fields}</instance>".encode()


class DiscoveryClientLoop(Loop):
    """The service's own Eureka client: register, renew every `interval`, and register
    again when a renewal answers 404 (DiscoveryClient.renew)."""

    def __init__(self, base: str, app: str, instance_id: str, *, interval: float = 0.05,
                 auth: tuple[str, str] | None = None, port: int = 8080) -> None:
        super().__init__(interval, self.renew)
        self.base = base.rstrip("/")
        self.app = app.upper()
        self.instance_id = instance_id
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth is not None:
            pair = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {pair}"
        self.last_dirty = int(time.time() * 1000)
        self.port = port
        self.registrations = 0
        self.reregistrations = 0
        self.renewals: list[int] = []  # the status of each renewal

    def instance_info(self) -> dict[str, Any]:
        """What InstanceInfo serialises to: the client never sends an override."""
        return {
            "instanceId": self.instance_id, "hostName": "127.0.0.1", "app": self.app,
            "ipAddr": "127.0.0.1", "status": "UP", "overriddenStatus": "UNKNOWN",
            "port": {"$": self.port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"}, "countryId": 1,
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                               "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
            "metadata": {"@class": "java.util.Collections$EmptyMap"},
            "vipAddress": self.app.lower(), "isCoordinatingDiscoveryServer": "false",
            "lastDirtyTimestamp": str(self.last_dirty), "actionType": "ADDED",
        }

    def register(self) -> int:
        status, _ = http_call("POST", f"{self.base}/apps/{self.app}",
                              body=json.dumps({"instance": self.instance_info()}).encode(),
                              headers=self.headers)
        if status == 204:
            self.registrations += 1
        return status

    def renew(self) -> None:
        status, _ = http_call("PUT", f"{self.base}/apps/{self.app}/{self.instance_id}"
                              f"?status=UP&lastDirtyTimestamp={self.last_dirty}",
                              headers=self.headers)
        self.renewals.append(status)
        if status == 404:
            self.reregistrations += 1
            self.last_dirty = int(time.time() * 1000)  # setIsDirtyWithTime()
            self.register()

    def start(self) -> None:
        """Register first, as the client does at start-up, then renew in the background."""
        assert self.register() == 204, "the contract server refused the registration"
        super().start()
