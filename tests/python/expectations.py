"""Assertions the Redis client scripts share: a failure raises, naming what
was checked, so the script exits non-zero with the reason."""

import redis


def expect(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def expect_error(call, fragment, what):
    try:
        call()
    except redis.ResponseError as e:
        if fragment not in str(e):
            raise AssertionError(f"{what}: error {e!r} lacks {fragment!r}")
        return
    raise AssertionError(f"{what}: no error")
