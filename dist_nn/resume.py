"""--resume: the checkpoint a run continues and the config it continues with.

The checkpoint's recorded config is the base; the values of the config file and the
overrides given now go on top (docs/design.md §3.6, the resume contract). Every rank reads
the checkpoint itself, before MPI starts, since the config says how to start MPI. A file
never chooses code: a user's model (model.name = "pkg.module:function") recorded in a
checkpoint from elsewhere is built only if it is named now; resuming one's own run
directory counts as naming it.
"""
from pathlib import Path

from . import checkpoint, config as configuration
from .config import tomllib
from .models import ModelError, check_chosen_by_user


class Resumed:
    """The checkpoint a run resumes: `path`, its `contents` (checkpoint.read), and the
    `warnings` of newer checkpoints skipped (said by rank 0 once MPI runs)."""

    def __init__(self, path, contents, warnings=()):
        self.path, self.contents, self.warnings = str(path), contents, list(warnings)
        run_id = contents[2].get("run_id")  # of the run that wrote it (None: unrecorded)
        self.run_id = run_id if isinstance(run_id, str) else None


# Per-start actions: a resumed run does not repeat them because its first start did.
NOT_INHERITED = {("log", "overwrite"): False, ("model", "init_from"): ""}


def resumed_config(path, overrides, resume):
    """(config, Resumed or None) for --resume ("auto": the newest checkpoint of log.run_dir
    that verifies; else a checkpoint file): the checkpoint's recorded config with the values
    of the config file at `path` and the overrides on top, validated. With no checkpoint to
    resume ("auto" in an empty run directory): the defaults, as a fresh run."""
    text = configuration.read_text(path)
    given = configuration.compose(text, overrides, source=path or "config")
    warnings = []
    if resume == "auto":
        found = given.log.run_dir and checkpoint.newest_valid(
            Path(given.log.run_dir) / "checkpoints", warn=warnings.append)
        if not found:
            return configuration.loads(text, overrides, path or "config", resume), None
        chosen, contents = found
    else:
        chosen = resume
        try:
            contents = checkpoint.read(chosen)
        except checkpoint.CheckpointError as error:
            raise configuration.ConfigError(f"cannot resume from {chosen}: {error}") from None
    try:
        checkpoint.check_meta(contents[2], chosen)
        recorded = configuration.compose(contents[2]["config"],
                                         source=f"the config recorded in {chosen}")
    except (checkpoint.CheckpointError, configuration.ConfigError) as error:
        raise configuration.ConfigError(f"cannot resume from {chosen}: {error}") from None
    for (section, key), value in NOT_INHERITED.items():
        setattr(getattr(recorded, section), key, value)
    config = configuration.loads(text, overrides, path or "config", resume, base=recorded)
    own = resume == "auto" or (given.log.run_dir and checkpoint.lies_in(
        chosen, Path(given.log.run_dir) / "checkpoints"))
    if not own:  # the run's own model is named by resuming its directory
        try:
            check_chosen_by_user(config.model.name, model_named(text, overrides), chosen, "")
        except ModelError as error:
            raise configuration.ConfigError(str(error)) from None
    return config, Resumed(chosen, contents, warnings)


def model_named(text, overrides):
    """The model.name given now, in the config file's text or the overrides (the last one
    wins, as they apply), or None."""
    named = tomllib.loads(text).get("model", {}).get("name") if text else None
    for item in overrides:
        if item.strip().startswith("model.name="):
            named = configuration.compose("", [item]).model.name
    return named
