"""``python -m matflow.pipeline``: run or resume the pipeline in this process."""

from __future__ import annotations

import sys

from matflow.pipeline.run import main

if __name__ == "__main__":
    sys.exit(main())
