"""``python -m rtdetr_convert SRC DST ...``: see ``rtdetr_convert.cli``."""
import sys

from .cli import main

sys.exit(main())
