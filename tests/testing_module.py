"""codext._testing, the test-only module (built only by a test install:
CODEXT_TEST_BUILD=1). Tests that need it import it from here, so that without it they
fail with this message instead of skipping."""
try:
    from codext import _testing as testing
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "codext._testing is not built: the tests need a test build. Build with "
        "CODEXT_TEST_BUILD=1, e.g. `CODEXT_TEST_BUILD=1 pip install -e \".[test]\"` or "
        "`CODEXT_TEST_BUILD=1 python setup.py build_ext --inplace`") from error

__all__ = ["testing"]
