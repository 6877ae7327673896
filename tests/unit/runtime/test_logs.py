"""The json-file / k8s-file log writer and reader, on plain files."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from rootless.runtime import logs
from rootless.runtime.logs import LogEntry, LogWriter, format_time, parse_time, read_logs

T0 = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z


def lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_time_format_and_parse_round_trip() -> None:
    assert format_time(T0) == "2023-11-14T22:13:20.123456789Z"
    assert format_time(T0, k8s=True) == "2023-11-14T22:13:20.123456789+00:00"
    assert parse_time("2023-11-14T22:13:20.123456789Z") == T0
    assert parse_time("2023-11-14T23:13:20.123456789+01:00") == T0
    assert parse_time("2023-11-14T22:13:20.1234Z") == T0 - 56789
    assert parse_time("2023-11-14T22:13:20Z") == T0 - 123456789
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_lines_become_entries_with_streams(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path))
    w.write("stdout", b"one\ntwo\n", T0)
    w.write("stderr", b"err\n", T0 + 1)
    w.close()
    assert lines(path) == [
        {"log": "one\n", "stream": "stdout", "time": "2023-11-14T22:13:20.123456789Z"},
        {"log": "two\n", "stream": "stdout", "time": "2023-11-14T22:13:20.123456789Z"},
        {"log": "err\n", "stream": "stderr", "time": "2023-11-14T22:13:20.123456790Z"},
    ]
    assert path.stat().st_mode & 0o777 == 0o640


def test_partial_lines_wait_for_their_newline_per_stream(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path), partial_timeout=10)
    w.write("stdout", b"hel", T0)
    w.write("stderr", b"E", T0)
    w.write("stdout", b"lo\nwor", T0 + 5)
    assert [(e["stream"], e["log"]) for e in lines(path)] == [("stdout", "hello\n")]
    assert lines(path)[0]["time"] == format_time(T0)  # the time its first byte was read
    assert w.next_deadline() == pytest.approx(T0 / 1e9 + 10)
    w.flush_partial(now=T0 / 1e9 + 5)
    assert len(lines(path)) == 1
    w.flush_partial(now=T0 / 1e9 + 11)
    # in the order their first bytes were read
    assert [(e["stream"], e["log"]) for e in lines(path)] == [("stdout", "hello\n"), ("stderr", "E"),
                                                              ("stdout", "wor")]
    assert w.next_deadline() is None
    w.write("stdout", b"end-without-newline", T0 + 20)
    w.close()
    assert lines(path)[-1]["log"] == "end-without-newline"


def test_long_lines_are_split_at_16k(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path))
    w.write("stdout", b"x" * (logs.MAX_LINE * 2 + 10) + b"\n", T0)
    w.close()
    got = [e["log"] for e in lines(path)]
    assert [len(g) for g in got] == [logs.MAX_LINE, logs.MAX_LINE, 11]
    assert "".join(got) == "x" * (logs.MAX_LINE * 2 + 10) + "\n"


def test_escaping_and_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path))
    w.write("stdout", 'quote " back \\ tab \t é 😀\n'.encode(), T0)
    w.write("stdout", b"bad \xff byte\n", T0)
    w.close()
    assert [e.data for e in read_logs(str(path))] == ['quote " back \\ tab \t é 😀\n'.encode(),
                                                      "bad \ufffd byte\n".encode()]


def test_rotation_keeps_max_files(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path), max_size=300, max_files=3)
    for i in range(100):
        w.write("stdout", f"line {i}\n".encode(), T0 + i)
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.log", "c.log.1", "c.log.2"]
    assert all((tmp_path / n).stat().st_size < 300 + 100 for n in names)
    got = [e.data.decode() for e in read_logs(str(path))]
    first = int(got[0].split()[1])
    assert got == [f"line {i}\n" for i in range(first, 100)]
    assert got[-1] == "line 99\n" and first > 50


def test_rotation_with_one_file_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path), max_size=200, max_files=1)
    for i in range(50):
        w.write("stdout", f"line {i}\n".encode(), T0 + i)
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.log"]
    assert path.stat().st_size < 200 + 100
    assert [e.data for e in read_logs(str(path))][-1] == b"line 49\n"


def test_k8s_file_format(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path), driver=logs.K8S_FILE)
    w.write("stdout", b"full line\n", T0)
    w.write("stderr", b"partial", T0)
    w.close()
    assert path.read_text().splitlines() == [
        "2023-11-14T22:13:20.123456789+00:00 stdout F full line",
        "2023-11-14T22:13:20.123456789+00:00 stderr P partial",
    ]
    assert list(read_logs(str(path))) == [LogEntry("stdout", b"full line\n", format_time(T0, True)),
                                          LogEntry("stderr", b"partial", format_time(T0, True))]


def test_reader_since_until_tail_and_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path))
    for i in range(10):
        w.write("stdout" if i % 2 else "stderr", f"{i}\n".encode(), T0 + i * 1_000_000_000)
    w.close()
    p = str(path)
    assert [e.data for e in read_logs(p, tail=3)] == [b"7\n", b"8\n", b"9\n"]
    assert list(read_logs(p, tail=0)) == []
    since = (T0 + 5 * 1_000_000_000) / 1e9
    assert [e.data for e in read_logs(p, since=since)] == [b"5\n", b"6\n", b"7\n", b"8\n", b"9\n"]
    assert [e.data for e in read_logs(p, until=(T0 + 1_500_000_000) / 1e9)] == [b"0\n", b"1\n"]
    [first] = read_logs(p, tail=1, timestamps=True)
    assert first.data == b"2023-11-14T22:13:29.123456789Z 9\n"
    assert [e.stream for e in read_logs(p, tail=2)] == ["stderr", "stdout"]


def test_reader_skips_malformed_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_text('{"log":"ok\\n","stream":"stdout","time":"2023-11-14T22:13:20Z"}\nnot json at all\n{broken\n')
    assert [e.data for e in read_logs(str(path))] == [b"ok\n"]
    assert list(read_logs(str(tmp_path / "missing.log"))) == []


def test_follow_streams_new_entries_across_rotation_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path), max_size=200, max_files=5)
    w.write("stdout", b"before\n")
    done = threading.Event()

    def writer() -> None:
        for i in range(30):
            w.write("stdout", f"live {i}\n".encode())
            time.sleep(0.005)
        w.close()
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    got = [e.data for e in read_logs(str(path), follow=True, stop_when=done.is_set, poll=0.01)]
    thread.join()
    assert got == [b"before\n"] + [f"live {i}\n".encode() for i in range(30)]


def test_follow_with_tail_zero_shows_only_new(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    w = LogWriter(str(path))
    w.write("stdout", b"old\n")
    stop = threading.Event()

    def later() -> None:
        time.sleep(0.05)
        w.write("stderr", b"new\n")
        w.close()
        stop.set()

    thread = threading.Thread(target=later)
    thread.start()
    got = [(e.stream, e.data) for e in read_logs(str(path), tail=0, follow=True, stop_when=stop.is_set, poll=0.01)]
    thread.join()
    assert got == [("stderr", b"new\n")]


def test_write_errors_do_not_raise(tmp_path: Path) -> None:
    directory = tmp_path / "gone"
    directory.mkdir()
    w = LogWriter(str(directory / "c.log"), max_size=10, max_files=2)
    (directory / "c.log").unlink()
    directory.rmdir()
    w.write("stdout", b"a line that triggers rotation\n")
    w.write("stdout", b"another\n")
    w.close()
    assert w.errors >= 1
