"""The HTTP/1.1 corpus runner in compliance/ judges answers the way its docstring says.

A small corpus written here (gunicorn's file format) goes to a real trioserve on loopback; the
runner must pass what is right and fail an accepted invalid request or a wrongly framed body.
The real corpus run is ``compliance/http_corpus.sh`` in .ci/run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import trio

from trioserve.testing import open_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "compliance"))

import echo_app  # type: ignore[import-not-found]  # noqa: E402
import gunicorn_corpus  # type: ignore[import-not-found]  # noqa: E402
import http_corpus  # type: ignore[import-not-found]  # noqa: E402

VALID_PY = """request = {"method": "POST", "uri": uri("/up"), "version": (1, 1),
    "headers": [("CONTENT-LENGTH", "5")], "body": b"hello"}
"""
INVALID_PY = "from gunicorn.http.errors import InvalidHeader\nrequest = InvalidHeader\n"


def test_decode_http_escapes() -> None:
    raw = b"GET /\\x41 HTTP/1.1\\r\\n\nX: a\\tb\\0\\r\\n\\r\\n\n"
    assert gunicorn_corpus.decode_http(raw) == b"GET /A HTTP/1.1\r\nX: a\tb\x00\r\n\r\n"
    with pytest.raises(ValueError):
        gunicorn_corpus.decode_http(b"GET /\\q HTTP/1.1\\r\\n\\r\\n")


def write_corpus(root: Path) -> Path:
    for kind in ("valid", "invalid"):
        (root / kind).mkdir(parents=True)
    (root / "valid" / "up.http").write_bytes(
        b"POST /up HTTP/1.1\\r\\n\nContent-Length: 5\\r\\n\\r\\nhello"
    )
    (root / "valid" / "up.py").write_text(VALID_PY)
    (root / "invalid" / "bad_cl.http").write_bytes(
        b"GET / HTTP/1.1\\r\\nContent-Length: x\\r\\n\\r\\n"
    )
    (root / "invalid" / "bad_cl.py").write_text(INVALID_PY)
    (root / "invalid" / "fine.http").write_bytes(b"GET / HTTP/1.1\\r\\nX: 1\\r\\n\\r\\n")
    (root / "invalid" / "fine.py").write_text(INVALID_PY)
    return root


async def run_runner(
    app: Any, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, dict[str, list[str]]]:
    """The runner's exit code, its output and ``{file: [seen, outcome]}``."""
    report = corpus / "report.json"
    async with open_server(app, access_log=False) as server:
        argv = ["127.0.0.1", str(server.port), "--corpus", str(corpus), "--json", str(report)]
        code: int = await trio.to_thread.run_sync(http_corpus.main, [*argv, "--timeout", "1"])
    rows = {v["name"]: [v["seen"], v["outcome"]] for v in json.loads(report.read_text())}
    return code, capsys.readouterr().out, rows


async def test_runner_passes_right_answers_and_fails_an_accepted_invalid_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, rows = await run_runner(echo_app.app, write_corpus(tmp_path), capsys)
    assert rows == {
        "up": ["PASS", "pass"],
        "bad_cl": ["REJECT", "pass"],
        "fine": ["ACCEPTED", "FAIL"],
    }
    assert out.splitlines()[-1] == "http_corpus: 2 passed, 1 failed, 0 skipped"
    assert code == 1


async def test_runner_catches_a_body_framed_wrongly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Scope = MutableMapping[str, Any]

    async def lying_app(scope: Scope, receive: Callable[[], Awaitable[Scope]], send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: unsupported, which trioserve accepts
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-length", b"0"), (b"x-body-length", b"4")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    corpus = write_corpus(tmp_path)
    for name in ("bad_cl", "fine"):
        for suffix in (".http", ".py"):
            (corpus / "invalid" / name).with_suffix(suffix).unlink()
    code, out, rows = await run_runner(lying_app, corpus, capsys)
    assert rows == {"up": ["BODY-MISMATCH", "FAIL"]}
    assert "BODY-MISMATCH" in out and "framed 4 body bytes, the file has 5" in out
    assert out.splitlines()[-1] == "http_corpus: 0 passed, 1 failed, 0 skipped"
    assert code == 1


def test_autobahn_summary_counts_only_failed_as_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compliance/autobahn.py judges wstest's report: NON-STRICT passes, FAILED fails, and a
    report with fewer cases than the mode runs is incomplete."""
    import autobahn  # type: ignore[import-not-found]

    def case(behavior: str) -> dict[str, str]:
        return {"behavior": behavior, "behaviorClose": "OK", "reportfile": "x.json"}

    cases = {"1.1.1": case("OK"), "3.2": case("NON-STRICT"), "5.1": case("INFORMATIONAL")}
    (tmp_path / "index.json").write_text(json.dumps({"trioserve": cases}))
    assert autobahn.summarize(tmp_path, 3) == (3, 0, True)
    cases["6.4.1"] = case("FAILED")
    (tmp_path / "index.json").write_text(json.dumps({"trioserve": cases}))
    assert autobahn.summarize(tmp_path, 301) == (3, 1, False)
    out = capsys.readouterr().out
    assert "FAILED 6.4.1" in out and "expected 301 cases, the report has 4" in out
