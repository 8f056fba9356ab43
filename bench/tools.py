"""How long ``parse_tool_calls`` takes on 1 MB of pathological text, and on normal replies.

Run as ``python bench/tools.py``. It measures and prints a table; it asserts nothing.
Each row is the best of three runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from machine import machine

from langchain_g4f.tools import parse_tool_calls

SIZE = 1_000_000
NAMES = {"get_weather", "add"}
CALL = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}
PROSE = "The weather in Paris is mild today, with a light breeze from the west. "


def repeated(unit: str, size: int = SIZE) -> str:
    """``unit`` repeated to ``size`` characters."""
    return (unit * (size // len(unit) + 1))[:size]


PATHOLOGICAL = {
    '{"a": repeated': repeated('{"a":'),
    "unclosed braces {{{": repeated("{"),
    'nested [[[ after {"a":': '{"a":' + repeated("["),
    "many small objects": repeated('{"a": 1} '),
    "braces in a long string": '{"a": "' + repeated('{}{"'),
    "braces in keys {": repeated('{":'),
    "unclosed fence, blank": "```" + repeated(" "),
    "many empty fences": repeated("```x"),
    # A reply without a "name" key is answered by one scan; these hold one, so every
    # object in them is parsed.
    '{"name": repeated': repeated('{"name":'),
    '{"a": repeated, "name" at the end': repeated('{"a":', SIZE - 6) + '"name"',
    'braces in keys {, "name" at the end': repeated('{":', SIZE - 6) + '"name"',
    "many small calls": repeated('{"name": "x", "arguments": {}} '),
}
NORMAL = {
    "plain prose, 1 KB": repeated(PROSE, 1_000),
    "a tool call": json.dumps(CALL),
    "prose, fenced call": PROSE + "\n```json\n" + json.dumps(CALL) + "\n```",
    "prose, then call, 100 KB": repeated(PROSE, 100_000) + json.dumps(CALL),
}


def best_of(runs: int, work: Callable[[], object]) -> float:
    """The fastest of ``runs`` timings of ``work()``, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    """Print one row per text: its size, the time taken, and whether a call was found."""
    print(f"machine: {machine()}")
    print(f"{'text':<36} {'size':>10} {'time':>10}  call")
    for title, texts in (("pathological", PATHOLOGICAL), ("normal", NORMAL)):
        print(f"-- {title}")
        for name, text in texts.items():
            found = parse_tool_calls(text, NAMES)
            seconds = best_of(3, lambda text=text: parse_tool_calls(text, NAMES))
            shown = f"{seconds * 1000:.1f} ms" if seconds >= 0.001 else f"{seconds * 1e6:.0f} µs"
            print(f"{name:<36} {len(text):>10,} {shown:>10}  {'yes' if found else 'no'}")


if __name__ == "__main__":
    main()
