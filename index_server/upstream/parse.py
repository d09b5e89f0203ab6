"""Reading an upstream project page, JSON (PEP 691) or HTML (PEP 503), into page files.

URLs are made absolute against the page URL; everything else is kept as the upstream said
it: hashes, requires-python, yanked and its reason, core-metadata, size, upload-time.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from index_server.simple.model import SimpleFile


class UpstreamPageError(ValueError):
    """The upstream answered with something that is not a Simple API page."""


# What an HTML Simple page may be served as ("" when the upstream sends no Content-Type).
HTML_MEDIA_TYPES = frozenset(
    {"", "text/html", "application/vnd.pypi.simple.v1+html", "application/xhtml+xml"}
)
# Any of these shows the body is HTML at all; a page of garbage has none.
MARKUP_TAGS = frozenset({"html", "head", "body", "meta", "title", "a", "h1", "base"})


def parse_project_page(body: bytes, content_type: str, page_url: str) -> list[SimpleFile]:
    """The files of an upstream page; ``UpstreamPageError`` when it is not a Simple page
    (so the cache keeps the page it has rather than take garbage)."""
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    if media_type.endswith("+json") or media_type == "application/json":
        return parse_json_page(body, page_url)
    if media_type not in HTML_MEDIA_TYPES:
        raise UpstreamPageError(f"not a Simple API page: Content-Type {media_type!r}")
    try:
        html = body.decode(_charset(params))
    except (LookupError, UnicodeDecodeError) as exc:
        raise UpstreamPageError(f"invalid HTML project page: {exc}") from None
    files, markup = _parse_html(html, page_url)
    if not markup and body.strip():
        raise UpstreamPageError("invalid HTML project page: no HTML markup in it")
    return files


def _charset(params: str) -> str:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def parse_json_page(body: bytes, page_url: str) -> list[SimpleFile]:
    try:
        data = json.loads(body)
        entries = data["files"]
        if not isinstance(entries, list):
            raise TypeError("'files' is not a list")
        return [_json_file(entry, page_url) for entry in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UpstreamPageError(f"invalid JSON project page: {exc}") from None


def _json_file(entry: dict[str, object], page_url: str) -> SimpleFile:
    hashes = entry.get("hashes") or {}
    if not isinstance(hashes, dict):
        raise TypeError("'hashes' is not an object")
    metadata = entry.get("core-metadata", entry.get("dist-info-metadata", False))
    yanked = entry.get("yanked", False)
    size = entry.get("size")
    upload_time = entry.get("upload-time")
    requires_python = entry.get("requires-python")
    return SimpleFile(
        filename=str(entry["filename"]),
        url=urljoin(page_url, str(entry["url"])),
        hashes={str(k): str(v) for k, v in hashes.items()},
        requires_python=str(requires_python) if requires_python else None,
        yanked=yanked if isinstance(yanked, str) else bool(yanked),
        core_metadata=_metadata_value(metadata),
        size=size if isinstance(size, int) else None,
        upload_time=upload_time if isinstance(upload_time, str) else None,
    )


def _metadata_value(value: object) -> dict[str, str] | bool:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return bool(value)


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.anchors: list[tuple[dict[str, str | None], list[str]]] = []
        self.markup = False  # seen a doctype or a tag a Simple page has
        self._current: list[str] | None = None

    def handle_decl(self, decl: str) -> None:
        self.markup = self.markup or decl.lower().startswith("doctype html")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.markup = self.markup or tag in MARKUP_TAGS
        if tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "a":
            self._current = []
            self.anchors.append((dict(attrs), self._current))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data)


def parse_html_page(html: str, page_url: str) -> list[SimpleFile]:
    return _parse_html(html, page_url)[0]


def _parse_html(html: str, page_url: str) -> tuple[list[SimpleFile], bool]:
    """The page's files, and whether it had any HTML markup at all."""
    parser = _AnchorParser()
    parser.feed(html)
    parser.close()
    base = page_url
    if parser.base:
        with contextlib.suppress(ValueError):  # e.g. an invalid IPv6 host: keep the page URL
            base = urljoin(page_url, parser.base)
    found = []
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        try:
            url, fragment = urldefrag(urljoin(base, href))
        except ValueError:  # not a URL at all: nothing a client could download
            continue
        filename = "".join(text).strip() or url.rsplit("/", 1)[-1]
        hashes = {}
        if "=" in fragment:
            algo, _, digest = fragment.partition("=")
            hashes[algo] = digest
        metadata_attr = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        found.append(
            SimpleFile(
                filename=filename,
                url=url,
                hashes=hashes,
                requires_python=attrs.get("data-requires-python") or None,
                yanked=(attrs["data-yanked"] or "") if "data-yanked" in attrs else False,
                core_metadata=_html_metadata(
                    metadata_attr,
                    "data-core-metadata" in attrs or "data-dist-info-metadata" in attrs,
                ),
            )
        )
    return found, parser.markup


def _html_metadata(value: str | None, present: bool) -> dict[str, str] | bool:
    if not present:
        return False
    if value and "=" in value:
        algo, _, digest = value.partition("=")
        return {algo: digest}
    return True


def files_to_json(files: list[SimpleFile]) -> str:
    return json.dumps([asdict(f) for f in files], separators=(",", ":"), sort_keys=True)


def files_from_json(text: str) -> list[SimpleFile]:
    return [SimpleFile(**entry) for entry in json.loads(text)]
