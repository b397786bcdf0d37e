"""The names of the conditioning blocks that the model, the grids and the reports share (the paper's Sec. 3.2).

adaLN-Zero is the paper's best block, the official release's, and the block of a model or a run that names
none; a run's name mentions its block only when it is another.
"""

ADALN_ZERO = "adaln-zero"
DEFAULT_BLOCK = ADALN_ZERO
