"""The augment group's checks: Keras layer options, or albumentations transforms that albumentations itself
accepts (checks.py's conventions: one sentence, the full key, the valid choices and the closest match)."""

from collections.abc import Mapping
from typing import Any

from nnlab.config.checks import FIX, NON_NEGATIVE, Rule, each, number, one_of
from nnlab.errors import ConfigError, closest

FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")  # nnlab.data.augment.FLIPS
FILL_MODES = ("reflect", "constant", "nearest", "wrap")  # Keras's RandomTranslation, RandomZoom, …
AUGMENT_LIBRARIES = ("keras", "albumentations")  # nnlab.data.augment
# albumentations classes that are no image transform of their own (bases, 3-D volumes, torch tensors out).
NOT_TRANSFORMS = ("BasicTransform", "DualTransform", "ImageOnlyTransform", "Transform3D", "ToTensorV2")


def transform_entry(key: str, value: Any) -> None:
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ConfigError(f"{key}={value!r} must be a mapping of an albumentations class name and its arguments, "
                          f"e.g. {{name: HorizontalFlip, p: 0.5}}; {FIX}.")


def augment_library(key: str, cfg: Any) -> None:
    """Each library reads its own keys (Keras layer options or albumentations transforms), never both."""
    keras_keys = [k for k in ("flip", "rotation", "zoom", "shift", "contrast", "brightness") if getattr(cfg, k)]
    if cfg.library == "keras" and cfg.transforms:
        raise ConfigError(f"{key}.transforms is read only with {key}.library=albumentations; set it, or remove "
                          "the transforms.")
    if cfg.library == "albumentations" and (keras_keys or not cfg.transforms):
        what = f"{key}.{keras_keys[0]} is a Keras layer option" if keras_keys else "No transforms are listed"
        raise ConfigError(f"{what}: {key}.library=albumentations applies {key}.transforms, e.g. "
                          f"[{{name: HorizontalFlip, p: 0.5}}] (or set {key}.library=keras).")
    for i, entry in enumerate(cfg.transforms if cfg.library == "albumentations" else ()):
        albumentations_transform(f"{key}.transforms.{i}", dict(entry))


def albumentations_module():
    """albumentations, imported without its update check (a request to PyPI at import: runs stay offline)."""
    import os

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import albumentations
    except ImportError:
        raise ConfigError("augment.library=albumentations needs the albumentations package: pip install -e "
                          "'.[albumentations]' (make install includes it).") from None
    return albumentations


def albumentations_transform(key: str, entry: dict) -> None:
    """One of albumentations' own transform names, arguments of its class, values its class accepts (it validates
    them): a typo fails before the run, not in a pipeline thread mid-epoch."""
    import inspect

    A = albumentations_module()
    names = [n for n, c in vars(A).items() if inspect.isclass(c) and issubclass(c, A.BasicTransform)
             and not issubclass(c, A.Transform3D) and n not in NOT_TRANSFORMS]
    one_of(names)(f"{key}.name", entry["name"])
    args = {k: v for k, v in entry.items() if k != "name"}
    allowed = [p for p in inspect.signature(getattr(A, entry["name"])).parameters if p not in ("args", "kwargs")]
    for arg in (a for a in args if a not in allowed):
        hint = closest(arg, allowed)
        raise ConfigError(f"{key}: {entry['name']} has no argument '{arg}': its arguments are {', '.join(allowed)}"
                          + (f"; did you mean '{hint}'?" if hint else "."))
    try:
        getattr(A, entry["name"])(**args)
    except (TypeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        reason = " ".join(line for line in str(err).split("\n") if "further information" not in line)
        raise ConfigError(f"{key}: albumentations refuses {entry['name']} with {args} ({' '.join(reason.split())}); "
                          f"{FIX}.") from None


AUGMENT: dict[str, Rule] = {
    "flip": one_of(FLIPS, null=True), "fill_mode": one_of(FILL_MODES), "rotation": NON_NEGATIVE,
    "zoom": number(0, 1), "shift": number(0, 1), "contrast": number(0, 1), "brightness": number(0, 1),
    "library": one_of(AUGMENT_LIBRARIES), "transforms": each(transform_entry),
}
