"""Time dsharp's secret checks on long values, at one size and four times it.

Every recipe value is checked at load (``holds_url_credentials``, the key rule) and every
echo is redacted (``redact_text``); both must take time in proportion to the value's length.
The ratio printed for each input is the time at 4x the length over the time at 1x: about 4
for a linear check, about 16 for a quadratic one.

    python bench/redaction_scaling.py                 # 25,000 and 100,000 characters
    python bench/redaction_scaling.py --chars 5000
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable

from dsharp.commands.errors import require_counts, run_script
from dsharp.redaction import holds_url_credentials, redact_text


def _inputs(chars: int) -> dict[str, str]:
    """Values of about ``chars`` characters that slowed the checks down before."""
    bmp = b"BM" + bytes(52) + bytes(chars * 3 // 4)  # a black uncompressed inline image
    return {
        "inline image (data:image/bmp;base64,AAAA...)": "data:image/bmp;base64,"
        + base64.b64encode(bmp).decode(),
        "one long word after %": "%" + "a" * chars,
        "URL with ';' and '&' parameters": "https://h/x?" + "a=1;b=2&" * (chars // 8),
        "percent-escapes (%3D...)": "https://h/x?v=" + "%3D" * (chars // 3),
    }


def _seconds(check: Callable[[str], object], value: str, repeats: int = 3) -> float:
    """The least wall time of ``repeats`` calls (the others are the machine's noise)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        check(value)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=25_000, help="The smaller length.")
    args = parser.parse_args()
    require_counts({"--chars": args.chars})
    small, large = _inputs(args.chars), _inputs(4 * args.chars)
    print(f"seconds at {args.chars} and {4 * args.chars} characters, and their ratio")
    for check in (holds_url_credentials, redact_text):
        for name in small:
            short, long = _seconds(check, small[name]), _seconds(check, large[name])
            ratio = long / short if short > 0 else float("nan")
            print(f"{check.__name__:22} {name:46} {short:8.4f} {long:8.4f} {ratio:6.1f}x")


if __name__ == "__main__":
    run_script(main)
