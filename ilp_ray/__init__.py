"""ilp-ray: audit LLM supervised fine-tuning for the Incomplete Learning Phenomenon (ILP).

Heavy dependencies (torch, ray, transformers, mlflow) are imported inside the functions that
need them, so that importing this package and running ``ilp --help`` stay instant.
"""

__version__ = "0.1.0"
