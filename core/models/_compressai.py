"""CompressAI, imported once without its start-up noise.

Importing ``compressai`` also imports its point-cloud datasets and, through them,
``torch_geometric``, whose ``torch.jit.script`` calls print a FutureWarning on recent
torch in every CLI run and worker. We use only the image models and entropy models;
the warning says nothing to our users, so it is silenced here and only here.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    from compressai.entropy_models import EntropyModel
    from compressai.models import Elic2022Official

__all__ = ["Elic2022Official", "EntropyModel"]
