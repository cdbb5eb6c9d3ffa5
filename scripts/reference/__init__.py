"""PyTorch reference of the adrank model (docs/design.md §4), bundle writer/reader (docs/design.md §3) and
funnel (docs/funnel.md). Run from the repository root: `python3 -m scripts.reference.cli --help`."""
from .model import AdRankModel, AdTable, Request, RequestState, model_dims
from .bundle import export_bundle, import_bundle, read_safetensors
from . import score

__all__ = ["AdRankModel", "AdTable", "Request", "RequestState", "model_dims", "export_bundle",
           "import_bundle", "read_safetensors", "score"]
