"""What optuna-dashboard shows, adjusted through its public JSON API and page (WSGI middleware):
a read-only dashboard says so in its page, and a confirmation study shows no best trial.

optuna-dashboard 0.21 has no setting for either: its study page always shows the best trial
and the hyperparameter importances, and a refused write only says "Failed to ...".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from search.base.names import CONFIRMS

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

NOTICE_SCRIPT = "/read-only-notice.js"  # same origin: the dashboard's CSP allows it
NOTICE_ID = "read-only-notice"
NOTICE = (
    f'<div id="{NOTICE_ID}" role="status" style="position:fixed;bottom:0;left:0;right:0;z-index:9999;'
    "padding:.4em 1em;background:#fff3cd;color:#5c4400;font:14px system-ui,sans-serif;"
    'border-top:1px solid #e0c060">{message}</div><script src="' + NOTICE_SCRIPT + '"></script>'
)
# Shows a refused write's reason in the notice, as an alert: the dashboard's own message does not.
SCRIPT = f"""(() => {{
  const fetch0 = window.fetch;
  window.fetch = async (...args) => {{
    const response = await fetch0(...args);
    if (response.status === 403) {{
      response.clone().json().then((body) => {{
        const notice = document.getElementById("{NOTICE_ID}");
        if (notice && typeof body.reason === "string" && body.reason.startsWith("read-only")) {{
          notice.textContent = "Refused: " + body.reason;
          notice.setAttribute("role", "alert");
          notice.style.background = "#f8d7da";
        }}
      }}).catch(() => {{}});
    }}
    return response;
  }};
}})();
""".encode()
STUDY_API = re.compile(r"/api/studies/(?P<id>[0-9]+)(?P<importances>/param_importances)?/*")  # as bottle strips "/"
CACHE_HEADERS = ("HTTP_IF_MODIFIED_SINCE", "HTTP_IF_NONE_MATCH", "HTTP_RANGE")

App = Callable[[dict, Callable], Iterable[bytes]]


def _call(app: App, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run ``app`` and collect its whole answer."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        answer["status"], answer["headers"] = status, headers
        return lambda data: None

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    return answer["status"], answer["headers"], body


def _send(start_response: Callable, status: str, headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
    kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(status, [*kept, ("Content-Length", str(len(body)))])
    return [body]


class ReadOnlyNotice:
    """The dashboard's page with a notice that it is read-only; a refused write shows ``message``."""

    def __init__(self, app: App, message: str) -> None:
        self.app, self.message = app, message

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        if path == NOTICE_SCRIPT and method == "GET":
            return _send(start_response, "200 OK", [("Content-Type", "text/javascript")], SCRIPT)
        if method != "GET" or not path.startswith("/dashboard"):
            return self.app(environ, start_response)
        fresh = {k: v for k, v in environ.items() if k not in CACHE_HEADERS}  # a whole page to edit
        status, headers, body = _call(self.app, fresh)
        if status.startswith("200") and b"<body>" in body:
            notice = NOTICE.format(message=self.message).encode()
            body = body.replace(b"<body>", b"<body>" + notice, 1)
        return _send(start_response, status, headers, body)


class ConfirmationPages:
    """A confirmation study (user attr ``confirms``) served without a best trial or importances:
    its runs repeat fixed configurations, so neither means anything; its note has the figures."""

    def __init__(self, app: App, storage: BaseStorage) -> None:
        self.app, self.storage = app, storage
        self._confirmations: set[int] = set()  # a study never stops being one

    def is_confirmation(self, study_id: int) -> bool:
        if study_id not in self._confirmations:
            try:
                attrs = self.storage.get_study_user_attrs(study_id)
            except KeyError:
                return False
            if CONFIRMS in attrs:
                self._confirmations.add(study_id)
        return study_id in self._confirmations

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = STUDY_API.fullmatch(environ.get("PATH_INFO", ""))
        if environ["REQUEST_METHOD"] != "GET" or not match or not self.is_confirmation(int(match["id"])):
            return self.app(environ, start_response)
        headers = [("Content-Type", "application/json")]
        if match["importances"]:
            return _send(start_response, "200 OK", headers, json.dumps({"param_importances": [[]]}).encode())
        status, headers, body = _call(self.app, environ)
        if status.startswith("200"):
            detail = json.loads(body)
            detail["best_trials"] = []
            body = json.dumps(detail).encode()
        return _send(start_response, status, headers, body)
