"""Allow `python -m deploy_tool` (used by molecule scenarios, which run under the venv's python)."""

import sys

from deploy_tool.cli import main

sys.exit(main())
