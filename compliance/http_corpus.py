#!/usr/bin/env python3
"""Send gunicorn's raw HTTP/1.1 request corpus to a live server and judge every answer.

usage: http_corpus.py [HOST PORT] [--corpus DIR] [--only GLOB] [--timeout S]
                      [--no-inject-host] [--json FILE] [--quiet]

Without HOST and PORT it starts trioserve itself (this interpreter, ``python -m trioserve``,
serving compliance/echo_app.py on a free 127.0.0.1 port; TRIOSERVE_* settings such as
TRIOSERVE_HTTP=h11 reach it through the environment) and stops it by its PID afterwards.
With them it tests any server that serves echo_app.py (Hypercorn, Uvicorn ...), for comparison.

Every file goes over its own TCP connection. How an answer is judged:

valid/NAME    pass  every expected response arrives with a status below 400 and, when the app
                    reports ``x-body-length``, with the body length the file expects (a server
                    that frames a body differently than gunicorn's parser would is caught).
              pass  a 4xx/5xx, or a close before any response, for the few files that a strict
                    RFC 9110/9112 reading lets a server refuse (MAY_REFUSE below, with reasons).
invalid/NAME  pass  a 4xx/5xx, or a close without any response.
              pass  an acceptance the RFCs permit (MAY_ACCEPT), or one they permit only when the
                    server closes the connection by itself after answering (ACCEPT_IF_CLOSED).
              FAIL  any other acceptance, or no answer at all (the server neither answers nor
                    closes, even after we shut down our sending side).
skipped       files whose .py sets a gunicorn option (cfg.set: they test gunicorn settings),
              and valid files that cannot work over a socket (their Content-Length does not
              match the body in the file, so a live server rightly waits for more).

An HTTP/1.1 request without Host gets ``Host: localhost`` after its request line (shown as
+Host): RFC 9112 section 3.2 makes a server answer 400 to it, which would hide what the file
is about. --no-inject-host sends the files unchanged.

The last line is ``http_corpus: N passed, N failed, N skipped``; exit 1 on a failure, 2 when the
corpus or the server cannot be reached (the closing line then counts that as one failure).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from corpus_wire import add_host_invalid, add_host_valid, exchange  # noqa: E402
from gunicorn_corpus import Expected, case_files, corpus_dir, load_case  # noqa: E402
from serve_echo import serve_echo  # noqa: E402

_NO_CODING = "a transfer coding the server does not implement: 501 is allowed (RFC 9112 6.1)"
_IDENTITY = "'identity' is no registered transfer coding: 501 is allowed (RFC 9112 6.1)"
_CONNECT = "CONNECT: an ASGI server does not tunnel, so refusing it is allowed"

# valid files that a strict server may refuse (4xx/5xx, or a close with no answer).
MAY_REFUSE = {
    "009": _IDENTITY,
    "025": _NO_CODING,
    "025_line": _NO_CODING,
    "027": "raw non-ASCII bytes are not allowed in a request-target (RFC 9112 3.2, RFC 3986)",
    "029": _IDENTITY,
    "030": _IDENTITY,
    "031": "the method token '-BLARGH' is legal but unknown: 405/501 are fair answers",
    "rfc9110_field_value_obs_text_01": "obs-text in a field value: accept or refuse (9110 5.5)",
    "rfc9112_smuggle_gzip_chunked_01": _NO_CODING,
    "rfc9112_smuggle_te_identity_chunked_01": _IDENTITY,
    "rfc9112_target_absolute_userinfo_01": "userinfo in an http(s) URI is forbidden (9110 4.2.4)",
    "rfc9112_target_asterisk_options_01": "OPTIONS *: the app would see path '*'; refusing is ok",
    "rfc9112_target_authority_connect_01": _CONNECT,
    "rfc9112_target_authority_ipv6_01": _CONNECT,
}

# valid files that cannot be judged over a socket.
UNSENDABLE = {"099": "Content-Length 17914 with 8599 body bytes in the file: a server waits"}

_LIMIT = "a size limit: where it lies is the server's choice (gunicorn's default differs)"
_TRAILER = "a forbidden trailer field: a recipient may discard trailers (RFC 9110 6.5.1)"
_CTL = "a control character other than CR/LF/NUL may be kept (RFC 9110 5.5)"

# invalid files whose acceptance the RFCs permit (gunicorn is stricter than it must be).
MAY_ACCEPT = {
    "003c": "'-bl' is a valid method token ('-' is a tchar, RFC 9110 9.1)",
    "006": _LIMIT,
    "007": _LIMIT,
    "008": _LIMIT,
    "009": _LIMIT,
    "017": _LIMIT,
    "041": "a repeated Content-Type: no rule makes a recipient reject it",
    "obs_fold_01": "obs-fold may be replaced by SP instead of a 400 (RFC 9112 5.2)",
    "rfc9110_field_value_ctl_bel_01": _CTL,
    "rfc9110_field_value_ctl_del_01": _CTL,
    "rfc9110_trailer_forbidden_cl_01": _TRAILER,
    "rfc9110_trailer_forbidden_host_01": _TRAILER,
    "rfc9110_trailer_forbidden_te_01": _TRAILER,
    "rfc9112_bare_lf_01": "a bare LF may be recognised as a line terminator (RFC 9112 2.2); "
    "h11 does, for both parsers",
    "rfc9112_smuggle_cl_list_form_01": "a list of one repeated Content-Length may be read as "
    "that value (RFC 9110 8.6)",
    "rfc9112_target_asterisk_non_options_01": "asterisk-form outside OPTIONS: no MUST reject",
}

# invalid files a server may accept only if it closes the connection after its response.
ACCEPT_IF_CLOSED = {
    "chunked_05": "HTTP/1.0 with Transfer-Encoding: faulty framing, close after (RFC 9112 6.1)",
    "rfc9112_smuggle_cl_te_chunked_01": "Content-Length and Transfer-Encoding: the server may "
    "use the chunked framing but must close after responding (RFC 9112 6.1)",
}


@dataclass
class Verdict:
    kind: str
    name: str
    outcome: str  # pass, pass-note, FAIL, skip
    seen: str  # what happened: PASS / REJECT / INCOMPLETE / BODY-MISMATCH / CLOSED / ...
    statuses: list[int] = field(default_factory=list)
    closed: str = ""  # "", "+close" (the server closed) or "+eofclose" (after our shutdown)
    note: str = ""
    host_added: bool = False


def _response_bounds(requests: list[Mapping[str, Any]]) -> tuple[int, int]:
    """How many responses a conforming server sends to pipelined ``requests`` (fewest, most).

    Responses stop after a request that asks to close and after an HTTP/1.0 request without
    keep-alive; as keep-alive is optional in HTTP/1.0, a server may stop after any 1.0 request.
    """
    fewest = None
    for count, request in enumerate(requests, 1):
        connection = ",".join(
            v.lower() for k, v in request["headers"] if k.upper() == "CONNECTION"
        )
        old = tuple(request["version"]) == (1, 0)
        if old and fewest is None:
            fewest = count
        if "close" in connection or (old and "keep-alive" not in connection):
            return fewest or count, count
    return fewest or len(requests), len(requests)


def _length_differs(requests: list[Mapping[str, Any]]) -> bool:
    return any(
        key.upper() == "CONTENT-LENGTH"
        and value.strip().isdigit()
        and int(value) != len(r["body"])
        for r in requests
        for key, value in r["headers"]
    )


def judge_valid(name: str, data: bytes, expected: Expected, args: argparse.Namespace) -> Verdict:
    requests = expected.requests
    host_added = False
    if not args.no_inject_host:
        data, host_added = add_host_valid(data, requests)
    fewest, most = _response_bounds(requests)
    got = exchange(args.address, data, [str(r["method"]) for r in requests], most, args.timeout)
    verdict = Verdict("valid", name, "pass", "PASS", got.statuses, got.closed_mark(True))
    verdict.host_added = host_added
    if any(status >= 400 for status in got.statuses):
        verdict.seen = "REJECT"
    elif len(got.responses) < most and not (len(got.responses) >= fewest and got.closed):
        verdict.seen = "INCOMPLETE"
    else:
        for response, request in zip(got.responses, requests, strict=False):
            framed, length = response.header("x-body-length"), len(request["body"])
            if framed is not None and int(framed) != length:
                verdict.seen = "BODY-MISMATCH"
                verdict.note = f"framed {framed} body bytes, the file has {length}"
                break
    refused = verdict.seen == "REJECT" or (
        verdict.seen == "INCOMPLETE" and not got.responses and got.closed
    )
    if expected.settings:
        verdict.outcome, verdict.note = "skip", f"needs gunicorn settings {expected.settings}"
    elif name in UNSENDABLE or _length_differs(requests):
        verdict.outcome = "skip"
        verdict.note = UNSENDABLE.get(name, "Content-Length differs from the body in the file")
    elif verdict.seen != "PASS":
        verdict.outcome = "pass-note" if name in MAY_REFUSE and refused else "FAIL"
        verdict.note = MAY_REFUSE.get(name, verdict.note) if refused else verdict.note
    return verdict


def judge_invalid(name: str, data: bytes, expected: Expected, args: argparse.Namespace) -> Verdict:
    host_added = False
    if not args.no_inject_host:
        data, host_added = add_host_invalid(data)
    method = data.split(b" ", 1)[0].decode("latin-1", "replace")
    got = exchange(args.address, data, [method] * 8, None, args.timeout, half_close=True)
    if any(status >= 400 for status in got.statuses):
        seen = "REJECT"
    elif got.responses:
        seen = "ACCEPTED"
    else:
        seen = "CLOSED" if got.closed else "NO-ANSWER"
    verdict = Verdict("invalid", name, "FAIL", seen, got.statuses, got.closed_mark(False))
    verdict.host_added = host_added
    if expected.settings:
        verdict.outcome, verdict.note = "skip", f"needs gunicorn settings {expected.settings}"
    elif seen in ("REJECT", "CLOSED"):
        verdict.outcome = "pass"
    elif name in MAY_ACCEPT:
        verdict.outcome, verdict.note = "pass-note", MAY_ACCEPT[name]
    elif name in ACCEPT_IF_CLOSED:
        closed_itself = seen == "ACCEPTED" and got.server_closed
        verdict.outcome = "pass-note" if closed_itself else "FAIL"
        prefix = "" if closed_itself else "accepted and kept open: "
        verdict.note = prefix + ACCEPT_IF_CLOSED[name]
    if seen == "ACCEPTED":
        lengths = [r.header("x-body-length") for r in got.responses]
        if any(length is not None for length in lengths):
            framed = ",".join(str(length) for length in lengths)
            verdict.note = "; ".join(filter(None, [verdict.note, f"x-body-length={framed}"]))
    return verdict


def run_all(corpus: Path, args: argparse.Namespace) -> list[Verdict]:
    verdicts = []
    for kind, judge in (("valid", judge_valid), ("invalid", judge_invalid)):
        for http_file in case_files(corpus, kind):
            if not fnmatch.fnmatch(f"{kind}/{http_file.stem}", args.only):
                continue
            try:
                data, expected = load_case(http_file)
                verdicts.append(judge(http_file.stem, data, expected, args))
            except Exception as exc:  # one broken file or runner bug must not hide the rest
                verdicts.append(
                    Verdict(kind, http_file.stem, "FAIL", "RUNNER-ERROR", note=repr(exc))
                )
    return verdicts


def report(verdicts: list[Verdict], quiet: bool) -> tuple[int, int, int]:
    row = "{:<8} {:<44} {:<18} {:<14} {:<9} {}"
    print(row.format("set", "file", "statuses", "seen", "outcome", "note"))
    for v in verdicts:
        if quiet and v.outcome == "pass":
            continue
        statuses = (",".join(map(str, v.statuses)) or "-") + v.closed
        name = v.name + (" +Host" if v.host_added else "")
        print(row.format(v.kind, name[:44], statuses[:18], v.seen, v.outcome, v.note))
    print()
    for kind in ("valid", "invalid"):
        mine = [v for v in verdicts if v.kind == kind]
        outcomes = Counter(v.outcome for v in mine)
        seen = " ".join(f"{k}={n}" for k, n in sorted(Counter(v.seen for v in mine).items()))
        print(
            f"{kind:<7} files={len(mine)} pass={outcomes['pass']} "
            f"pass-note={outcomes['pass-note']} FAIL={outcomes['FAIL']} "
            f"skipped={outcomes['skip']}   seen: {seen}"
        )
    failed = sum(v.outcome == "FAIL" for v in verdicts)
    skipped = sum(v.outcome == "skip" for v in verdicts)
    return len(verdicts) - failed - skipped, failed, skipped


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("host", nargs="?", help="omit HOST and PORT to start trioserve")
    parser.add_argument("port", nargs="?", type=int)
    parser.add_argument("--corpus", type=Path, help="a tests/requests folder (default: fetch)")
    parser.add_argument("--only", default="*", help="glob on valid/NAME or invalid/NAME")
    parser.add_argument("--timeout", type=float, default=1.5, help="seconds to wait for answers")
    parser.add_argument("--no-inject-host", action="store_true")
    parser.add_argument("--json", type=Path, help="write every verdict to this file")
    parser.add_argument("--quiet", action="store_true", help="list only the rows not 'pass'")
    args = parser.parse_args(argv)
    if (args.host is None) != (args.port is None):
        parser.error("give both HOST and PORT, or neither")
    return args


def setup_failed(why: str) -> int:
    """A run that could not be made still ends with the closing line, as one failure."""
    print(f"http_corpus: {why}", file=sys.stderr)
    print("http_corpus: 0 passed, 1 failed, 0 skipped")
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        corpus = args.corpus or corpus_dir()
    except Exception as exc:
        return setup_failed(f"the corpus could not be fetched: {exc}")
    if not (corpus / "valid").is_dir():
        return setup_failed(f"no corpus at {corpus}")
    given = (args.host, args.port) if args.host else None
    server = nullcontext(given) if given else serve_echo()
    started = time.monotonic()
    with server as address:
        if address is None:
            return setup_failed("trioserve did not start")
        args.address = address
        verdicts = run_all(corpus, args)
    passed, failed, skipped = report(verdicts, args.quiet)
    print(f"corpus: {corpus}  server: {args.address[0]}:{args.address[1]}", end="  ")
    print(f"{time.monotonic() - started:.1f}s  host added: {not args.no_inject_host}")
    if args.json:
        args.json.write_text(json.dumps([asdict(v) for v in verdicts], indent=1))
    print(f"http_corpus: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
