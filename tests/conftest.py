import os

import torch

# The suite runs on 2 CPU cores in CI; keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
