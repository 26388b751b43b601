"""The ratio of two medians that two benchmark logs print (used by speed.sh and
implicit_speed.sh).

    python benchmarks/ratio.py LABEL LOG_A PATTERN_A LOG_B PATTERN_B

Each PATTERN is a regular expression whose first group is the number in its LOG; prints
``ratio LABEL: a / b (a / b)``.
"""

import re
import sys


def number(path: str, pattern: str) -> float:
    return float(re.search(pattern, open(path).read()).group(1))


if __name__ == "__main__":
    label, log_a, pattern_a, log_b, pattern_b = sys.argv[1:6]
    a, b = number(log_a, pattern_a), number(log_b, pattern_b)
    print(f"ratio {label}: {a / b:.2f} ({a:.3f} / {b:.3f})")
