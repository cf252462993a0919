#!/usr/bin/env python
"""Training launcher, for `accelerate launch`:

    accelerate launch train_gan.py --config configs/t2i_shapes.toml --set train.max_steps=500
    accelerate launch train_gan.py --config configs/t2i_shapes.toml --resume latest

The same command runs on one CPU, one GPU, several GPUs or several machines; how many is
`accelerate launch`'s business (see the README). Arguments are those of `gan train`.
"""

import sys

from gan.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
