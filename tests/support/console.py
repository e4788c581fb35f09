"""Drive the operator console through Flask's test client: sign in, read pages, post forms
with the session's CSRF token, as a browser would."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Console:
    """One browser: its own cookie jar, signed in (or not) with one token."""

    def __init__(self, app: Any, base_url: str = "http://localhost") -> None:
        self.app = app
        self.client = app.test_client()
        self.base_url = base_url
        self.csrf: str | None = None

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url, base_url=self.base_url, **kw)

    def sign_in(self, token: str, next_url: str = "/admin/plugins") -> Any:
        form = self.get("/admin/login")
        login_csrf = _CSRF.search(form.get_data(as_text=True))
        assert login_csrf, form.get_data(as_text=True)
        response = self.client.post("/admin/login", base_url=self.base_url, data={
            "token": token, "csrf_token": login_csrf.group(1), "next": next_url})
        if response.status_code == 303:
            page = self.get("/admin/plugins")
            found = _CSRF.search(page.get_data(as_text=True))
            self.csrf = found.group(1) if found else None
        return response

    def post(self, url: str, data: dict[str, Any] | None = None, csrf: bool = True,
             **kw: Any) -> Any:
        form = dict(data or {})
        if csrf and self.csrf:
            form.setdefault("csrf_token", self.csrf)
        return self.client.post(url, base_url=self.base_url, data=form, **kw)

    def cookie(self, name: str) -> Any:
        return self.client.get_cookie(name, path="/admin")


class PageFacts(HTMLParser):
    """What a page asks the browser to do: scripts, styles, forms, event handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.inline_scripts = 0
        self.style_attributes = 0
        self.handlers: list[str] = []
        self.resources: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.buttons: list[str] = []
        self.controls: list[dict[str, str]] = []  # inputs, selects, textareas
        self.label_for: set[str] = set()
        self._in_script = False
        self._in_button = False
        self._in_label = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if "style" in values:
            self.style_attributes += 1
        self.handlers += [k for k in values if k.startswith("on")]
        if tag == "script":
            if "src" in values:
                self.resources.append(values["src"])
            else:
                self._in_script = True
        if tag == "style":
            self.inline_scripts += 1  # an inline stylesheet needs 'unsafe-inline' too
        if tag in ("link", "img", "iframe") and ("href" in values or "src" in values):
            self.resources.append(values.get("href") or values.get("src", ""))
        if tag == "form":
            self.forms.append(values)
        if tag == "button":
            self._in_button = True
            self.buttons.append(values.get("aria-label", ""))
        if tag == "label":
            self._in_label += 1
            if values.get("for"):
                self.label_for.add(values["for"])
        if tag in ("input", "select", "textarea") and values.get("type") != "hidden":
            self.controls.append({**values, "tag": tag,
                                  "wrapped": "yes" if self._in_label else ""})

    def unlabelled(self) -> list[dict[str, str]]:
        """Form controls that no label names (by `for`, by wrapping, or `aria-label`)."""
        return [c for c in self.controls if not (c.get("id") in self.label_for
                                                  or c["wrapped"] or c.get("aria-label"))]

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._in_label -= 1
        if tag == "script":
            self._in_script = False
        if tag == "button":
            self._in_button = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1
        if self._in_button:
            self.buttons[-1] += data.strip()


def page_facts(html: str) -> PageFacts:
    facts = PageFacts()
    facts.feed(html)
    return facts
