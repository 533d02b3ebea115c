"""Data: load SFT files into records and convert them to multiple-choice items (paper 3.1.1).

Heavy libraries (pyarrow, sentence-transformers) are imported inside functions.
"""

from ilp_ray.data.embed import Embedder, HashingEmbedder, TextEmbedder, get_embedder
from ilp_ray.data.load import LoadedSft, load_sft, read_sft
from ilp_ray.data.mc import build_mc_items

__all__ = ["Embedder", "HashingEmbedder", "LoadedSft", "TextEmbedder", "build_mc_items", "get_embedder", "load_sft",
           "read_sft"]
