"""``python -m rebalancer <command>``: the operator's tools beside the function.

    backtest   what the function would have done over a past period (rebalancer/tools/backtest.py)
    rules      the alerting rules generated from the configuration (rebalancer/tools/rules.py)
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    commands = {"backtest": "rebalancer.tools.backtest", "rules": "rebalancer.tools.rules"}
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    module = __import__(commands[argv[0]], fromlist=["main"])
    code: int = module.main(argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
