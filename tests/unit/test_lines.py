from sandbox.lines import LineSplitter, Tail


def split(chunks, max_bytes=8):
    s = LineSplitter(max_bytes)
    out = [piece for chunk in chunks for piece in s.feed(chunk)]
    return out + list(s.flush()), s.truncated


def test_lines_across_chunks():
    assert split([b"ab", b"c\nde", b"\n\nf"]) == ([(b"abc", False), (b"de", False), (b"", False), (b"f", False)], 0)


def test_overlong_line_is_cut_and_its_rest_dropped():
    lines, truncated = split([b"0123456789", b"abcdef\nok\n"], max_bytes=4)
    assert lines == [(b"0123", True), (b"ok", False)]
    assert truncated == 1


def test_line_of_exactly_max_is_not_truncated():
    assert split([b"1234\n"], max_bytes=4) == ([(b"1234", False)], 0)


def test_tail_keeps_the_last_bytes():
    tail = Tail(10)
    for word in ["first", "second", "third"]:
        tail.add(word)
    assert tail.text() == "third"
    tail.add("x" * 50)
    assert tail.text() == "x" * 10
