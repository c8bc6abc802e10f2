"""Check a downloaded Virtual KITTI 2 folder, write split lists and a manifest, optionally cache it resized.

Usage: python data_scripts/prepare_vkitti2.py ROOT [--out OUT] [--size H W] [--verify] [--hash-files]
(see --help and densemtl_lab/data/prepare.py for the output format).
"""

import sys

from densemtl_lab.data.prepare import main

if __name__ == "__main__":
    sys.exit(main("vkitti2"))
