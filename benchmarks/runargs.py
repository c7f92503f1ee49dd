"""The command line the paradigm benchmarks share: --quick, --out, --threads (imported as a sibling module:
the benchmarks run as scripts, so their own folder is first on sys.path)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def run_args(doc: str | None, quick_help: str, prefix: str) -> tuple[argparse.Namespace, Path]:
    """(parsed arguments, the folder to keep runs in: --out or a fresh temporary one); sets torch's threads."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default; 1 on a "
                                                               "machine shared with other jobs)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args, args.out or Path(tempfile.mkdtemp(prefix=prefix))
