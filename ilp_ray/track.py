"""Experiment tracking: ``MLflowTracker`` and its do-nothing twin ``NullTracker`` share one interface."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


class Tracker:
    """The interface every tracker offers. The base class does nothing (it is the null tracker)."""

    run_id: str | None = None
    tracking_uri: str | None = None

    def start(self, run_name: str, tags: dict[str, str] | None = None) -> Tracker:
        return self

    def attach(self, run_id: str) -> Tracker:
        """Log into an existing run (another stage's) instead of starting one."""
        self.run_id = run_id
        return self

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, keep_nan: bool = False) -> None:
        """Log ``metrics`` at ``step``; NaN values are dropped unless ``keep_nan`` (a figure that
        does not apply, logged so every run of a comparison carries the same names)."""

    def resume(self) -> int:
        """Continue a run stopped mid-way, not logging again the steps it logged (``MLflowTracker``)."""
        return 0

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_dataset(self, df, source: str, name: str, context: str) -> None:
        """Log ``df`` (read from ``source``) as an MLflow dataset input of the run, in ``context``
        ("training", "evaluation"): the UI's "Datasets" column shows what the run used."""

    def end(self, status: str = "FINISHED") -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.end("FAILED" if exc_type else "FINISHED")


class NullTracker(Tracker):
    """Tracking turned off."""


class MLflowTracker(Tracker):
    """One MLflow run.

    Args:
        uri: tracking URI (``sqlite:///abs/path/mlflow.db``, ``http://host:5000``, …).
        experiment: experiment name; created on first use.
        artifact_location: where a new experiment stores artifacts (needed for sqlite stores,
            which otherwise write to ``./mlruns`` of whatever the working directory is).
    """

    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None):
        import mlflow

        self._mlflow = mlflow
        self.tracking_uri = uri
        self._logged: dict[str, int] = {}  # per metric, the last step logged before a resume
        if artifact_location is None and uri.startswith("sqlite:///"):
            # Beside the database, never ./mlruns of whatever the working directory is.
            artifact_location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        self._client = _Guarded(mlflow.MlflowClient(tracking_uri=uri), uri)
        exp = self._client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self._client.create_experiment(
            experiment, artifact_location=artifact_location)

    def start(self, run_name: str, tags: dict[str, str] | None = None) -> MLflowTracker:
        run = self._client.create_run(self.experiment_id, run_name=run_name, tags=tags or {})
        self.run_id = run.info.run_id
        return self

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        from ilp_ray.errors import redact

        items = [Param(k, redact(str(v))[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def resume(self) -> int:
        """Continue a run that logged steps before it was stopped: from now on a metric is not
        logged at a step at or below the last step its history already holds.

        A resumed training replays the steps from its checkpoint to the kill, with the same
        figures (the resume is exact); without this their metrics would be logged a second time,
        so that MLflow's charts show each of those steps twice. Returns the number of metric keys
        the run held. One ``get_metric_history`` per key, once per resume.
        """
        keys = list(self._client.get_run(self.run_id).data.metrics)
        self._logged = {k: max((m.step for m in self._client.get_metric_history(self.run_id, k)), default=-1)
                        for k in keys}
        return len(keys)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, keep_nan: bool = False) -> None:
        import time

        from mlflow.entities import Metric

        ts, step = int(time.time() * 1000), step or 0
        ms = [Metric(k, float(v), ts, step) for k, v in metrics.items()
              if (keep_nan or v == v) and step > self._logged.get(k, -1)]
        for i in range(0, len(ms), 1000):
            self._client.log_batch(self.run_id, metrics=ms[i:i + 1000])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self._client.log_artifacts(self.run_id, str(p), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(p), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self._client.set_tag(self.run_id, k, v)

    def log_dataset(self, df, source: str, name: str, context: str) -> None:
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag

        ds = mlflow.data.from_pandas(df, source=source, name=name)
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(
            ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])])

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._client.set_terminated(self.run_id, status=status)


class _Guarded:
    """An ``MlflowClient`` whose failures are ``TrackingError``s naming the server: a tracking
    server that is down or refuses a call ends the job with one clear line, not a traceback.
    MLflow's own bounded retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``_TIMEOUT``) run first."""

    def __init__(self, client, uri: str):
        self._c, self._uri = client, uri

    def __getattr__(self, name: str):
        fn = getattr(self._c, name)
        if not callable(fn):
            return fn

        def call(*args, **kwargs):
            from mlflow.exceptions import MlflowException

            from ilp_ray.errors import TrackingError

            try:
                return fn(*args, **kwargs)
            except (MlflowException, OSError) as e:
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                first = re.sub(r"://[^/@\s]+@", "://", first)  # MLflow's message repeats the URI, userinfo too
                raise TrackingError(
                    f"MLflow tracking at {public_uri(self._uri)} failed ({name}): {first}. Start the server, fix "
                    "tracking.uri, or set tracking.enabled=false") from e
        return call


def public_uri(uri: str) -> str:
    """``uri`` without userinfo (no credentials in messages): ``errors.redact``."""
    from ilp_ray.errors import redact

    return redact(uri)


def default_tracking_uri(run_root: str | Path) -> tuple[str, str]:
    """sqlite store and artifact folder under ``run_root``: (tracking URI, artifact location)."""
    root = Path(run_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def make_tracker(enabled: bool, uri: str | None, experiment: str, run_root: str | Path) -> Tracker:
    if not enabled:
        return NullTracker()
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None  # a cluster's shared server wins
    if uri is None:
        uri, artifacts = default_tracking_uri(run_root)
        return MLflowTracker(uri, experiment, artifact_location=artifacts)
    return MLflowTracker(uri, experiment)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
