"""A small client for the wheelfarm server: platforms, index pages, builds and resolutions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from packaging.utils import canonicalize_name

from client.warm.environment import platform_from_json
from platforms import Platform

PEP691_JSON = "application/vnd.pypi.simple.v1+json"
TIMEOUT = 30.0


class ApiError(Exception):
    """The server refused or failed a request; ``str()`` is a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


@dataclass
class WheelfarmClient:
    server: str
    token: str | None = None
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "wheelfarm-client"
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    # URLs ---------------------------------------------------------------------------------
    def console_url(self, job_id: int) -> str:
        return f"{self.server}/console/builds/{job_id}"

    def api_url(self, job_id: int) -> str:
        return f"{self.server}/api/builds/{job_id}"

    # Requests -----------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self.server + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ApiError(0, f"cannot reach {self.server}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, _reason(response))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, f"{path} did not answer JSON") from None

    def platforms(self) -> dict[str, Platform]:
        data = self._json("GET", "/api/platforms")
        return {p["name"]: platform_from_json(p) for p in data["platforms"]}

    def project_page(self, platform: str, project: str) -> dict[str, Any] | None:
        """The platform's PEP 691 page of the project, or None if the index has no such project."""
        path = f"/{platform}/simple/{canonicalize_name(project)}/"
        try:
            return self._json("GET", path, headers={"Accept": PEP691_JSON})  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def request_builds(self, project: str, version: str, platforms: list[str]) -> list[dict]:  # type: ignore[type-arg]
        body = {"project": project, "version": version, "platforms": platforms}
        return self._json("POST", "/api/builds", json=body)["requests"]  # type: ignore[no-any-return]

    def request_resolution(self, platform: str, requirements: str, constraints: str) -> Any:
        """``{"resolution": job, "reused": bool}``: a queued job, or the stored closure."""
        body = {"platform": platform, "requirements": requirements, "constraints": constraints}
        return self._json("POST", "/api/resolutions", json=body)

    def build(self, job_id: int) -> dict[str, Any]:
        """One job (a build or a resolution), with its log."""
        return self._json("GET", f"/api/builds/{job_id}")  # type: ignore[no-any-return]

    def builds(self, platform: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The platform's newest jobs (without logs)."""
        params = {"platform": platform, "limit": str(limit)}
        return self._json("GET", "/api/builds", params=params)["builds"]  # type: ignore[no-any-return]


def _reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return " ".join(response.text.split())[:300] or response.reason
