"""The operator's admission webhooks alone (no controllers), run like `ojsctrl`: the CLI's parser plus the
webhook flags, `setup_webhooks`, `cli.run`. Once `ojsctrl` itself wires the webhooks this module still works
(the flags are added only when the parser lacks them), and tests may run `ojsctrl` instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ojsctrl import cli
from ojsctrl.webhooks.flags import add_webhook_flags
from ojsctrl.webhooks.setup import setup_webhooks


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.build_parser()
    if "--enable-webhooks" not in parser._option_string_actions:
        add_webhook_flags(parser)
    return cli.run(sys.argv[1:] if argv is None else argv, setup_webhooks, parser)


if __name__ == "__main__":
    sys.exit(main())
