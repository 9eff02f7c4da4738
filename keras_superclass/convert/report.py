"""What a checkpoint conversion did, and its errors for unmatched names."""

import dataclasses


@dataclasses.dataclass
class ConversionReport:
    """What `load_reference_weights` did.

    Attributes:
        loaded: checkpoint keys copied into the model.
        ignored: checkpoint keys deliberately skipped (text tower, `proj`).
        missing: model weights the checkpoint lacked (only with
            `strict=False`; they keep their initialisation).
        unexpected: checkpoint keys nothing in the model matches (only with
            `strict=False`).
        notes: human-readable remarks (resized position table, ...).
    """

    loaded: list = dataclasses.field(default_factory=list)
    ignored: list = dataclasses.field(default_factory=list)
    missing: list = dataclasses.field(default_factory=list)
    unexpected: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)


def few_keys(keys, n=6):
    keys = sorted(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def check_names(report, missing, unexpected, advice, strict):
    """Raises (strict) or records in `report` the unmatched names."""
    if not (missing or unexpected):
        return
    message = []
    if missing:
        message.append(
            f"{len(missing)} model weights are missing from the "
            f"checkpoint: {few_keys(missing)}."
        )
    if unexpected:
        message.append(
            f"{len(unexpected)} checkpoint entries match nothing in "
            f"the model: {few_keys(unexpected)}."
        )
    message = " ".join(message + [advice])
    if strict:
        raise ValueError(message)
    report.missing, report.unexpected = sorted(missing), sorted(unexpected)
    report.notes.append(message)
