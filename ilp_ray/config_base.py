"""The base of every config section, and the tracking section every job shares (pydantic only).

Kept apart from ``ilp_ray.config`` so that section modules of other packages (diagnosis, train,
evidence) can build on it without importing the audit config, which in turn imports them.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingConfig(_Section):
    enabled: bool = Field(True, description="Log the audit to MLflow.")
    uri: str | None = Field(None, description="MLflow tracking URI; None: sqlite under the run root.")
    experiment: str = Field("ilp-audit", description="MLflow experiment name.")
    tags: dict[str, str] = Field(default_factory=dict, description=(
        "Extra tags on the run (a mitigation study sets mlflow.parentRunId, so its jobs nest under the arm)."))


# The SFT data's row layouts (ilp_ray.data.conversations reads them); a type every data-reading config shares.
DataFormat = Literal["auto", "ilp", "messages", "prompt-completion", "alpaca", "sharegpt"]
DATA_FORMAT_HELP = (
    "Layout of the data's rows (ilp_ray/data/conversations.py): 'auto' reads it from the fields; "
    "TRL 'messages', 'prompt-completion', 'alpaca', 'sharegpt' or our 'ilp' (prompt/response). "
    "A conversation gives one sample per assistant turn.")
